"""TickHistory: the bounded, offset-addressed ring."""

from __future__ import annotations

import pytest
from tickstream.v1 import tick_pb2

from feed_service.history import TickHistory


def filled(capacity: int, count: int) -> TickHistory:
    history = TickHistory(capacity)
    for offset in range(1, count + 1):
        history.append(tick_pb2.Tick(symbol="X", offset=offset))
    return history


def test_empty_history_has_no_offsets() -> None:
    history = TickHistory(3)
    assert (history.head_offset, history.earliest_offset, len(history)) == (0, 0, 0)
    assert list(history.after(0, 10)) == []
    assert history.covers_after(0)


def test_eviction_keeps_the_newest_capacity_ticks() -> None:
    history = filled(3, 5)
    assert (history.earliest_offset, history.head_offset, len(history)) == (3, 5, 3)
    assert [t.offset for t in history.after(0, 10)] == [3, 4, 5]
    assert [t.offset for t in history.after(3, 10)] == [4, 5]
    assert [t.offset for t in history.after(2, 1)] == [3]


def test_covers_after_tells_history_lost_from_nothing_new() -> None:
    history = filled(3, 5)
    assert history.covers_after(2), "ticks 3..5 are all retained"
    assert not history.covers_after(1), "tick 2 was evicted"
    assert history.covers_after(5), "at the head: nothing missing"
    assert not history.covers_after(6), "ahead of the head"


def test_append_rejects_a_non_contiguous_offset() -> None:
    history = filled(3, 2)
    with pytest.raises(ValueError):
        history.append(tick_pb2.Tick(offset=4))


def test_extend_stores_a_contiguous_run_or_nothing() -> None:
    history = filled(4, 2)
    history.extend([tick_pb2.Tick(symbol="X", offset=o) for o in (3, 4, 5)])
    assert (history.earliest_offset, history.head_offset) == (2, 5)
    assert [t.offset for t in history.after(0, 10)] == [2, 3, 4, 5]
    for bad in ([6, 8], [7], [5]):
        with pytest.raises(ValueError):
            history.extend([tick_pb2.Tick(symbol="X", offset=o) for o in bad])
    assert history.head_offset == 5


def test_a_history_started_later_holds_only_what_follows_its_start() -> None:
    history = TickHistory(3)
    history.start_at(100)
    assert (history.head_offset, history.earliest_offset, len(history)) == (99, 0, 0)
    assert history.covers_after(99) and not history.covers_after(50)
    for offset in range(100, 103):
        history.append(tick_pb2.Tick(symbol="X", offset=offset))
    assert (history.earliest_offset, history.head_offset, len(history)) == (100, 102, 3)
    assert history.covers_after(99) and not history.covers_after(98)
    history.append(tick_pb2.Tick(symbol="X", offset=103))
    assert history.earliest_offset == 101 and not history.covers_after(99)
    with pytest.raises(ValueError):
        history.start_at(0)
