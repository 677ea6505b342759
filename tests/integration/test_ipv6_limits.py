"""Per-address limits key IPv6 clients on their /64 (issue 14): a subscriber with many addresses
of one /64 gets one budget, as one IPv4 address does.

The client addresses are set up inside a private network namespace, so this needs root,
``unshare`` and ``ip``; it runs in CI (root on Debian) and is skipped, with the reason, elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ipv6_limits_in_netns.py")


@pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("ip")),
    reason="needs root, unshare and ip to give loopback IPv6 addresses in a private namespace",
)
def test_addresses_of_one_ipv6_64_share_one_stream_budget() -> None:
    result = subprocess.run(
        ["unshare", "-n", sys.executable, str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "one /64 held to 2 streams" in result.stdout
