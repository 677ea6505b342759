"""FanOut: steady clients get one framed write per dispatch; the others go through their session."""

from __future__ import annotations

import asyncio

from edge_service import fanout
from edge_service.delivery import Flusher, chunk_frame
from edge_service.metrics import EdgeMetrics
from tests.unit.edge_service.fakes import FakeSink, FakeUpstream, offsets_sent, session, trades


def joined(upstream: FakeUpstream, sink: FakeSink | None = None):  # type: ignore[no-untyped-def]
    client = session([upstream.symbol])
    client.outbox.sink = sink
    fanout.join(upstream, client, Flusher(EdgeMetrics()))
    client.begin_live(upstream, snapshot=False)  # type: ignore[arg-type]
    return client


async def test_steady_clients_get_the_same_framed_chunk_and_move_their_cursor() -> None:
    a = FakeUpstream("A", watermark=3)
    sinks = [FakeSink(), FakeSink()]
    clients = [joined(a, sink) for sink in sinks]
    ticks = trades(a, [4, 5])
    a.deliver(ticks, watermark=6)
    await asyncio.sleep(0)  # the pass runs at the end of the loop's turn
    expected = chunk_frame(ticks[0].frame + ticks[1].frame)
    assert sinks[0].writes == sinks[1].writes == [expected]
    assert [c.cursor for c in clients] == [6, 6]
    assert all(c.outbox.queued_bytes == 0 for c in clients)


async def test_paused_queued_or_unstarted_clients_take_their_session_path() -> None:
    a = FakeUpstream("A", watermark=0)
    paused, unstarted = joined(a, FakeSink(open=False)), joined(a, None)
    a.deliver(trades(a, [1]), watermark=1)
    await asyncio.sleep(0)
    assert paused.outbox.queued == 1 and unstarted.outbox.queued == 1
    assert paused.outbox.sink.writes == []  # type: ignore[union-attr]
    paused.outbox.sink.open = True  # type: ignore[union-attr]
    a.deliver(trades(a, [2]), watermark=2)
    await asyncio.sleep(0)
    assert offsets_sent(paused) == [1, 2], "queued bytes first, in order: no fast write past them"


async def test_leaving_removes_an_empty_fan_out_from_the_source() -> None:
    a = FakeUpstream("A")
    client = joined(a, FakeSink())
    assert len(a.listeners) == 1
    assert fanout.leave(a, client) is True
    assert not a.listeners and not a.fan_outs


async def test_dispatches_of_one_loop_turn_go_out_in_one_write_per_client() -> None:
    a = FakeUpstream("A", watermark=0)
    sink = FakeSink()
    client = joined(a, sink)
    first, second = trades(a, [1, 2]), trades(a, [3])
    a.deliver(first, watermark=2)
    a.deliver(second, watermark=3)
    await asyncio.sleep(0)
    assert sink.writes == [chunk_frame(b"".join(t.frame for t in first + second))]
    assert client.cursor == 3


async def test_a_client_ahead_of_its_upstream_is_never_moved_back_or_sent_a_tick_twice() -> None:
    """Regression (found by the chaos run): a resumed client whose catch-up ran ahead of its
    symbol's shared upstream (the edge had been SIGSTOPped mid-catch-up) got a tick-less
    dispatch, which set its cursor back to the upstream's watermark; the upstream's next ticks,
    already sent by the catch-up, then went out again (64 trades twice). Fix: the pass only
    moves a cursor forward, and ticks at or below it take the session path, which skips them."""
    a = FakeUpstream("A", watermark=3)
    sink = FakeSink()
    client = joined(a, sink)
    client.cursor = 8  # delivered through 8 by its catch-up; the upstream is at 3
    a.deliver([], watermark=4)  # progress only
    await asyncio.sleep(0)
    assert client.cursor == 8
    a.deliver(trades(a, [5, 7, 9]), watermark=9)
    await asyncio.sleep(0)
    assert offsets_sent(client) == [9] and client.cursor == 9
