"""Per-client limits keyed by address (edge_service.limits): IPv6 clients by their prefix."""

from __future__ import annotations

import pytest

from edge_service.limits import StreamLimits, client_key
from edge_service.problems import Problem


def test_ipv6_clients_count_by_prefix_and_ipv4_as_they_are() -> None:
    assert client_key("203.0.113.7", 64) == "203.0.113.7"
    assert client_key("2001:db8:1:2:3:4:5:6", 64) == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:2:ffff::9", 64) == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::9", 64) == "2001:db8:1:3::/64"
    assert client_key("2001:db8:1:2:3:4:5:6", 56) == "2001:db8:1::/56"
    assert client_key("2001:db8::6", 128) == "2001:db8::6/128"
    assert client_key("::ffff:10.0.0.1", 64) == "10.0.0.1", "IPv4-mapped: the IPv4 address"
    assert client_key("fe80::1%eth0", 64) == "fe80::/64"
    assert client_key("unknown", 64) == "unknown"


def test_one_ipv6_subscriber_cannot_multiply_its_stream_budget() -> None:
    limits = StreamLimits(per_address=2)
    for host in ("2001:db8:1:2::1", "2001:db8:1:2::2"):
        limits.admit(client_key(host, 64), None)
    with pytest.raises(Problem) as refused:
        limits.admit(client_key("2001:db8:1:2::3", 64), None)
    assert refused.value.status == 429
    limits.admit(client_key("2001:db8:1:3::1", 64), None)  # another /64: its own budget
