"""Checks the compose schema cannot: every ``depends_on`` names a service of the file.

Usage: python scripts/check_compose.py docker-compose.yml; exits 1 listing each bad reference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def bad_references(compose: dict[str, object]) -> list[str]:
    """``"<service> depends on unknown <name>"`` for each dangling depends_on entry."""
    services = compose.get("services") or {}
    assert isinstance(services, dict)
    problems = []
    for name, service in services.items():
        depends = (service or {}).get("depends_on") or []
        for target in depends if isinstance(depends, list) else list(depends):
            if target not in services:
                problems.append(f"{name} depends on unknown service {target!r}")
    return problems


def main(path: str) -> int:
    problems = bad_references(yaml.safe_load(Path(path).read_text()))
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    if not problems:
        print(f"{path}: every depends_on names a service")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
