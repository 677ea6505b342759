"""feed_service.liveness: symbols turn stale after their stale time and live on their next
tick; sources report their state; streams follow changes by version."""

from __future__ import annotations

from tickstream.v1 import feed_pb2

from feed_service.liveness import Liveness

S = 1_000_000_000


def test_a_quiet_symbol_turns_stale_and_its_next_tick_revives_it() -> None:
    liveness = Liveness(stale_after=2, overrides={"SLOW": 60})
    liveness.touch(["FAST", "SLOW"], 10 * S)
    assert liveness.sweep(11 * S) == 0
    assert liveness.sweep(13 * S) == 1, "FAST is past 2 s; SLOW has 60 s"
    assert liveness.is_stale("FAST") and not liveness.is_stale("SLOW")
    assert liveness.sweep(14 * S) == 0, "a stale symbol is reported once"
    liveness.touch(["FAST"], 15 * S)
    changes = list(liveness.changes_since(0, frozenset({"FAST"})))
    assert [c.state for c in changes] == [feed_pb2.SYMBOL_STATE_STALE, feed_pb2.SYMBOL_STATE_LIVE]
    assert changes[1].last_tick_time.ToNanoseconds() == 15 * S
    assert list(liveness.changes_since(2, frozenset({"FAST"}))) == []


def test_changes_of_other_symbols_are_not_followed() -> None:
    liveness = Liveness(stale_after=1)
    liveness.touch(["A", "B"], S)
    liveness.sweep(5 * S)
    assert [c.symbol for c in liveness.changes_since(0, frozenset({"B"}))] == ["B"]


def test_sources_flow_go_stale_and_end() -> None:
    liveness = Liveness(stale_after=2)
    handle = liveness.source("replay")
    assert handle.state == feed_pb2.SOURCE_STATE_CONNECTED
    handle.record(5, 10 * S)
    assert handle.info().state == feed_pb2.SOURCE_STATE_FLOWING
    liveness.sweep(13 * S)
    assert handle.state == feed_pb2.SOURCE_STATE_STALE and "no tick" in handle.detail
    handle.record(1, 14 * S)
    handle.ended("recording ended")
    assert handle.info().state == feed_pb2.SOURCE_STATE_ENDED and handle.info().ticks == 6


def test_ages_are_seconds_since_the_last_tick() -> None:
    liveness = Liveness(stale_after=2)
    liveness.touch(["A"], 10 * S)
    assert dict(liveness.ages(12 * S + S // 2)) == {"A": 2.5}


def test_a_source_connected_without_ticks_turns_stale() -> None:
    liveness = Liveness(stale_after=2)
    handle = liveness.source("binance")
    handle.connected()
    liveness.sweep(handle.since_ns + S)
    assert handle.state == feed_pb2.SOURCE_STATE_CONNECTED
    liveness.sweep(handle.since_ns + 3 * S)
    assert handle.state == feed_pb2.SOURCE_STATE_STALE and "connected, no tick" in handle.detail
