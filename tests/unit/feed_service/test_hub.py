"""TickHub: numbering, snapshot, wake-ups."""

from __future__ import annotations

import asyncio

import pytest
from tickstream.v1 import feed_pb2, ingest_pb2, tick_pb2

from feed_service.hub import TickHub
from feed_service.ingest import make_draft


def hub_with(*symbols: str) -> TickHub:
    hub = TickHub(history_size=100, clock_ns=lambda: 1_700_000_000_000_000_000)
    hub.add_symbols(feed_pb2.SymbolInfo(symbol=s) for s in symbols)
    return hub


def trade(symbol: str, price: str = "1.00") -> ingest_pb2.TickDraft:
    return make_draft(symbol, 1_000, tick_pb2.Trade(price=price, size="1"))


def quote(symbol: str) -> ingest_pb2.TickDraft:
    return make_draft(symbol, 2_000, tick_pb2.Quote(bid_price="1", ask_price="2"))


def test_sequence_per_symbol_and_type_offset_feed_wide() -> None:
    hub = hub_with("A", "B")
    hub.publish([trade("A"), quote("A"), trade("B"), trade("A"), quote("A")])
    ticks = [stored.tick for stored in hub.history.after(0, 10)]
    assert [t.offset for t in ticks] == [1, 2, 3, 4, 5]
    assert [(t.symbol, t.WhichOneof("body"), t.sequence) for t in ticks] == [
        ("A", "trade", 1),
        ("A", "quote", 1),
        ("B", "trade", 1),
        ("A", "trade", 2),
        ("A", "quote", 2),
    ]
    assert ticks[0].event_time.ToNanoseconds() == 1_000
    assert ticks[0].ingest_time.ToNanoseconds() == 1_700_000_000_000_000_000
    assert ticks[0].trade.price == "1.00", "decimal strings are kept as given"


def test_snapshot_is_latest_per_symbol_and_type_in_offset_order() -> None:
    hub = hub_with("A", "B")
    hub.publish([trade("A", "1"), quote("B"), trade("A", "2"), quote("A")])
    both = frozenset({tick_pb2.TICK_TYPE_TRADE, tick_pb2.TICK_TYPE_QUOTE})
    snapshot = hub.snapshot(["A", "B"], both)
    assert [t.offset for t in snapshot] == [2, 3, 4]
    assert snapshot[1].tick.trade.price == "2"


def test_unknown_symbol_is_refused() -> None:
    with pytest.raises(KeyError):
        hub_with("A").publish([trade("Z")])


def test_epochs_differ_between_hubs() -> None:
    assert hub_with("A").epoch != hub_with("A").epoch


async def test_wait_beyond_wakes_on_publish_and_times_out_when_quiet() -> None:
    hub = hub_with("A")
    assert not await hub.wait_beyond(0, max_wait=0.01)
    waiter = asyncio.create_task(hub.wait_beyond(0, max_wait=5))
    await asyncio.sleep(0)
    hub.publish([trade("A")])
    assert await asyncio.wait_for(waiter, 1)
