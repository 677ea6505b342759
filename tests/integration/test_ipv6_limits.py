"""Per-address limits key IPv6 clients on their /64 (issue 14): a subscriber with many addresses
of one /64 gets one budget, as one IPv4 address does.

The client addresses are set up inside a private network namespace (``netns_unavailable`` says
what that needs); it runs in CI (root on Debian) and is skipped, with the reason, elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import netns_unavailable, run_in_netns

SCRIPT = Path(__file__).with_name("ipv6_limits_in_netns.py")


@pytest.mark.skipif(netns_unavailable() is not None, reason=str(netns_unavailable()))
def test_addresses_of_one_ipv6_64_share_one_stream_budget() -> None:
    result = run_in_netns(SCRIPT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "one /64 held to 2 streams" in result.stdout
