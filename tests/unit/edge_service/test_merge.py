"""SymbolMerge: one offset-ordered merge per symbol set, shared by its clients; feed restarts."""

from __future__ import annotations

from edge_service.merge import SymbolMerge
from tests.unit.edge_service.fakes import FakeUpstream, offsets_sent, session, trades, written


def merged(*upstreams: FakeUpstream) -> SymbolMerge:
    merge = SymbolMerge(list(upstreams))  # type: ignore[arg-type]
    for upstream in upstreams:
        upstream.listeners.add(merge)
    return merge


def joined(merge: SymbolMerge):  # type: ignore[no-untyped-def]
    client = session(merge.symbols)
    merge.listeners.add(client)
    client.begin_live(merge, snapshot=False)
    return client


def test_two_symbols_are_released_in_offset_order_only_when_both_passed() -> None:
    a, b = FakeUpstream("A", watermark=4), FakeUpstream("B", watermark=4)
    merge = merged(a, b)
    client = joined(merge)
    a.deliver(trades(a, [5, 9]), watermark=9)
    assert not client.outbox.queued, "B may still have a tick below 9"
    b.deliver(trades(b, [6, 8]), watermark=8)
    assert offsets_sent(client) == [5, 6, 8]
    b.deliver([], watermark=10)  # progress only
    assert offsets_sent(client) == [9]
    assert client.cursor == 9 == merge.watermark


def test_a_merge_starts_after_the_furthest_upstream() -> None:
    """B's upstream already dispatched up to 20: starting at A's 10 would give a client A's 15
    and then 21, whose id claims B's ticks up to 21 that it never got."""
    a, b = FakeUpstream("A", watermark=10), FakeUpstream("B", watermark=20)
    merge = merged(a, b)
    client = joined(merge)
    assert merge.watermark == 20 == client.cursor
    a.deliver(trades(a, [15, 21]), watermark=21)
    b.deliver(trades(b, [22]), watermark=22)
    a.deliver([], watermark=22)  # progress only
    assert offsets_sent(client) == [21, 22]


def test_a_snapshot_of_an_unsettled_merge_waits_for_the_lagging_symbol() -> None:
    """A's upstream lags at 10 while the merge starts at B's 20: A's ticks up to 20 are before
    the stream, so the snapshot, sent before the first dispatch, must show A's 15, the tick
    that the next one (sequence-wise) follows; taken at the join it showed A's tick at 10."""
    a, b = FakeUpstream("A", watermark=10), FakeUpstream("B", watermark=20)
    a.latest = {"trade": trades(a, [10])[0]}
    merge = merged(a, b)
    assert not merge.settled
    client = session(merge.symbols)
    merge.listeners.add(client)
    client.begin_live(merge, snapshot=True)
    assert written(client) is None, "nothing before A reaches the start"
    a.deliver(trades(a, [15, 21]), watermark=21)
    b.deliver(trades(b, [22]), watermark=22)
    a.deliver([], watermark=22)
    assert merge.settled
    text = written(client).decode()  # type: ignore[union-attr]
    snapshot, live = text.split("id: ", 1)
    assert '"offset":"15"' in snapshot and '"offset":"10"' not in snapshot
    assert [line for line in ("id: " + live).splitlines() if line.startswith("id: ")] == [
        f"id: {merge.epoch}-21",
        f"id: {merge.epoch}-22",
    ]


def test_every_client_of_the_set_gets_the_same_merged_bytes() -> None:
    a, b = FakeUpstream("A", watermark=0), FakeUpstream("B", watermark=0)
    merge = merged(a, b)
    clients = [joined(merge) for _ in range(3)]
    a.deliver(trades(a, [1, 3]), watermark=3)
    b.deliver(trades(b, [2]), watermark=3)
    chunks = [written(c) for c in clients]
    assert chunks[0] is chunks[1] is chunks[2]
    assert chunks[0] is not None and chunks[0].count(b"id: ") == 3


def test_a_client_joining_later_starts_at_the_merge_watermark() -> None:
    a, b = FakeUpstream("A", watermark=0), FakeUpstream("B", watermark=0)
    merge = merged(a, b)
    a.deliver(trades(a, [1, 4]), watermark=4)
    b.deliver(trades(b, [2]), watermark=2)  # 1 and 2 released, 4 held
    late = joined(merge)
    assert late.cursor == 2
    b.deliver([], watermark=5)
    assert offsets_sent(late) == [4]


def test_feed_restart_on_two_symbols_resets_after_the_later_restart_point() -> None:
    """The reset id is the later restart point: ticks of the other symbol between the two
    restart points are never counted as delivered without being sent."""
    a, b = FakeUpstream("A", watermark=50), FakeUpstream("B", watermark=50)
    merge = merged(a, b)
    client = joined(merge)
    a.restart("e2", 3)
    a.deliver(trades(a, [4, 5]), watermark=5)
    assert not client.outbox.queued, "no reset before every symbol is in the new epoch"
    b.restart("e2", 6)
    chunk = written(client)
    assert chunk is not None and chunk.count(b"event: reset") == 1
    assert b"id: e2-6" in chunk, "the cursor is the later restart point"
    a.deliver(trades(a, [7]), watermark=7)
    b.deliver([], watermark=7)
    assert offsets_sent(client) == [7]


def test_a_snapshot_holds_only_released_ticks_so_what_follows_it_continues() -> None:
    a, b = FakeUpstream("A", watermark=0), FakeUpstream("B", watermark=0)
    merge = merged(a, b)
    a.deliver(trades(a, [1]), watermark=1)
    b.deliver([], watermark=1)  # 1 released
    held = trades(a, [2])
    a.latest["trade"] = held[0]  # the upstream is ahead of the merge
    a.deliver(held, watermark=2)
    assert [t.offset for t in merge.snapshot(["trade"])] == [1], "2 is not released yet"
    client = joined(merge)
    b.deliver([], watermark=2)
    assert offsets_sent(client) == [2]
