"""A client that vanishes without FIN or RST is detected and freed (issue 3, behaviour 4).

Packets are blackholed by a route inside a private network namespace (``netns_unavailable``
says what that needs); it runs in CI (root on Debian) and is skipped, with the reason, elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import netns_unavailable, run_in_netns

SCRIPT = Path(__file__).with_name("vanish_in_netns.py")


@pytest.mark.skipif(netns_unavailable() is not None, reason=str(netns_unavailable()))
def test_client_vanishing_without_fin_is_freed_within_the_send_timeout() -> None:
    result = run_in_netns(SCRIPT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vanished client freed after" in result.stdout
