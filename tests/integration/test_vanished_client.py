"""A client that vanishes without FIN or RST is detected and freed (issue 3, behaviour 4).

Packets are blackholed by a route inside a private network namespace, so this needs root,
``unshare`` and ``ip``; it runs in CI (root on Debian) and is skipped, with the reason, elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("vanish_in_netns.py")


@pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("ip")),
    reason="needs root, unshare and ip to drop packets in a private network namespace",
)
def test_client_vanishing_without_fin_is_freed_within_the_send_timeout() -> None:
    result = subprocess.run(
        ["unshare", "-n", sys.executable, str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vanished client freed after" in result.stdout
