"""Binance's snapshot-and-diff rules (feed_service.sources.depth)."""

from __future__ import annotations

from feed_service.sources.depth import DepthSync, Diff


def diff(first: int, last: int, previous: int | None = None) -> Diff:
    return Diff(first, last, [[f"{last}.0", "1"]], [], previous)


def ids(updates: list) -> list[tuple[int, int, bool]]:
    return [(u.first_update_id, u.last_update_id, u.snapshot) for u in updates]


def test_buffered_diffs_before_the_snapshot_are_dropped_or_applied() -> None:
    sync = DepthSync()
    assert sync.on_diff(diff(1, 5)) == [] and sync.on_diff(diff(6, 9)) == []
    assert sync.on_diff(diff(10, 14)) == []
    out = sync.on_snapshot(11, [["1", "2"]], [["3", "4"]])
    # 1-5 and 6-9 are covered; 10-14 straddles 12 and is the first applied
    assert ids(out) == [(11, 11, True), (10, 14, False)]
    assert ids(sync.on_diff(diff(15, 20))) == [(15, 20, False)]
    assert sync.on_diff(diff(18, 20)) == []  # a repeat
    assert sync.last_break is None


def test_a_gap_stops_the_book_until_the_next_snapshot() -> None:
    sync = DepthSync()
    sync.on_snapshot(10, [], [])
    assert ids(sync.on_diff(diff(11, 12))) == [(11, 12, False)]
    assert sync.on_diff(diff(15, 16)) == []  # 13-14 missing
    assert sync.last_break is not None
    assert "13 updates missing" not in sync.last_break.describe()
    assert "(2 updates missing)" in sync.last_break.describe()
    assert sync.on_diff(diff(17, 18)) == [] and sync.last_break is None  # waiting
    out = sync.on_snapshot(16, [], [])
    assert ids(out) == [(16, 16, True), (17, 18, False)]
    assert sync.synced


def test_a_stale_snapshot_is_ignored() -> None:
    sync = DepthSync()
    sync.on_snapshot(10, [], [])
    sync.on_diff(diff(11, 20))
    assert sync.on_snapshot(10, [], []) == []
    assert ids(sync.on_diff(diff(21, 22))) == [(21, 22, False)]
    assert ids(sync.on_snapshot(22, [], [])) == [(22, 22, True)], "a refresh at the same id"
    assert ids(sync.on_diff(diff(23, 24))) == [(23, 24, False)]


def test_futures_diffs_chain_by_previous_id() -> None:
    sync = DepthSync()
    sync.on_diff(diff(1, 10, previous=0))
    sync.on_diff(diff(12, 20, previous=10))  # arrives before the snapshot at 10
    out = sync.on_snapshot(10, [], [])
    assert ids(out) == [(10, 10, True), (12, 20, False)]  # names the snapshot's id
    assert ids(sync.on_diff(diff(25, 30, previous=20))) == [(25, 30, False)]
    assert sync.on_diff(diff(35, 40, previous=31)) == []
    assert sync.last_break is not None


def test_a_break_among_buffered_diffs_keeps_the_later_ones_for_the_next_snapshot() -> None:
    sync = DepthSync()
    for first, last in ((11, 20), (25, 30), (31, 40)):
        sync.on_diff(diff(first, last))
    assert ids(sync.on_snapshot(15, [], [])) == [(15, 15, True), (11, 20, False)]
    assert sync.last_break is not None and not sync.synced
    out = sync.on_snapshot(27, [], [])
    assert ids(out) == [(27, 27, True), (25, 30, False), (31, 40, False)]


def test_a_snapshot_older_than_the_buffered_diffs_is_not_published() -> None:
    sync = DepthSync()
    sync.on_diff(diff(11, 20))
    assert sync.on_snapshot(5, [], []) == [] and sync.stale_snapshot and not sync.synced
    assert sync.last_break is None, "not a gap: fetch another"
    assert ids(sync.on_snapshot(12, [], [])) == [(12, 12, True), (11, 20, False)]
    assert not sync.stale_snapshot
