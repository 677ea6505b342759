"""Print the project's runtime requirements (``[project] dependencies`` of pyproject.toml, and
those of any extras named as arguments), one per line, for ``pip install -r``.

``make run`` installs these and runs the services from the checkout, without building and
installing the project itself: that build (an isolated setuptools environment) was most of
the time to a first tick on a fresh machine.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def requirements(extras: list[str]) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    return wanted


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1:])))
