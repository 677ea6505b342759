"""``pip install ./clients/python`` works from the repository, offline: the package carries
``tickstream_client`` and the generated ``tickstream.v1`` (through the committed symlink
``clients/python/tickstream -> ../../protos/tickstream``), and both import from the install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CHECK = """
import tickstream_client, tickstream.v1.feed_pb2 as feed, tickstream.v1.ingest_pb2_grpc
from tickstream_client import Publisher, subscribe, trade
print(tickstream_client.__file__)
print(feed.__file__)
print(trade("ACME", "1.5", "2").trade.price)
"""


def test_pip_installs_the_client_from_the_repository(tmp_path: Path) -> None:
    # A copy of the two folders involved, so the build leaves nothing in the working tree.
    repo = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    shutil.copytree(
        ROOT / "clients" / "python", repo / "clients" / "python", symlinks=True, ignore=ignore
    )
    shutil.copytree(ROOT / "protos", repo / "protos", ignore=ignore)
    assert (repo / "clients" / "python" / "tickstream").is_symlink()
    target = tmp_path / "site"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(target), str(repo / "clients" / "python")],
        timeout=120, capture_output=True, text=True,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    assert not (target / "tickstream").is_symlink(), "the generated code is copied in"
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    client_file, feed_file, price = result.stdout.split()
    assert client_file.startswith(str(target)) and feed_file.startswith(str(target))
    assert price == "1.5"
