"""tickstream_client.events and the subscription's argument parsing: the JSON shape of ticks is
the edge's SSE ``data``, control events carry the feed's fields."""

from __future__ import annotations

import json

import pytest
from tickstream.v1 import feed_pb2, tick_pb2
from tickstream_client import Position, Reset, SymbolStatus, tick_to_dict
from tickstream_client.events import reset_event, status_event
from tickstream_client.subscriber import parse_start, parse_types

from edge_service.encoding import encode_tick


def sse_data(frame: bytes) -> object:
    lines = frame.decode().split("\n")
    return json.loads(next(line for line in lines if line.startswith("data: "))[6:])


def make_trade() -> tick_pb2.Tick:
    tick = tick_pb2.Tick(symbol="ETHUSDT", sequence=75, offset=1282)
    tick.event_time.FromNanoseconds(1_723_161_260_816_000_000)
    tick.ingest_time.FromNanoseconds(1_796_012_304_885_691_460)
    tick.trade.price, tick.trade.size = "2683.20000000", "0.00340000"
    tick.trade.trade_id, tick.trade.side = "1520538999", tick_pb2.SIDE_BUY
    return tick


def make_quote() -> tick_pb2.Tick:
    tick = tick_pb2.Tick(symbol="BTCUSDT", sequence=2**63, offset=2**64 - 1)
    tick.quote.bid_price, tick.quote.bid_size = "61837.63000000", "0"
    tick.quote.ask_price, tick.quote.ask_size = "61837.64000000", "1.5"
    return tick


@pytest.mark.parametrize("tick", [make_trade(), make_quote()], ids=["trade", "quote"])
def test_tick_dict_is_the_sse_data(tick: tick_pb2.Tick) -> None:
    """The subscriber's dict equals, key for key and value for value, what the edge sends."""
    assert tick_to_dict(tick) == sse_data(encode_tick(tick, "2a4df7dd760a4637").frame)


def test_tick_dict_shape() -> None:
    data = tick_to_dict(make_trade())
    assert data == {
        "symbol": "ETHUSDT",
        "sequence": "75",
        "offset": "1282",
        "eventTime": "2024-08-08T23:54:20.816Z",
        "ingestTime": "2026-11-30T04:18:24.885691460Z",
        "trade": {
            "price": "2683.20000000",
            "size": "0.00340000",
            "tradeId": "1520538999",
            "side": "SIDE_BUY",
        },
    }


def test_reset_and_status_events() -> None:
    reset = feed_pb2.Reset(
        reason=feed_pb2.RESET_REASON_EPOCH_CHANGED, message="m", epoch="e2", head_offset=9
    )
    assert reset_event(reset) == Reset("epoch_changed", "m", "e2", 9)
    status = feed_pb2.SymbolStatus(symbol="ACME", state=feed_pb2.SYMBOL_STATE_STALE)
    assert status_event(status) == SymbolStatus("ACME", "stale", None)
    status.state = feed_pb2.SYMBOL_STATE_LIVE
    status.last_tick_time.FromNanoseconds(1_500_000_000)
    event = status_event(status)
    assert event.to_dict() == {
        "symbol": "ACME",
        "state": "live",
        "lastTickTime": "1970-01-01T00:00:01.500Z",
    }


def test_parse_types() -> None:
    assert parse_types(None) == []
    assert parse_types(["trade", "quote"]) == [tick_pb2.TICK_TYPE_TRADE, tick_pb2.TICK_TYPE_QUOTE]
    assert parse_types([tick_pb2.TICK_TYPE_QUOTE]) == [tick_pb2.TICK_TYPE_QUOTE]
    assert parse_types(["book", "bar"]) == [tick_pb2.TICK_TYPE_BOOK, tick_pb2.TICK_TYPE_BAR]
    with pytest.raises(ValueError, match="unknown tick type"):
        parse_types(["candle"])


def test_parse_start() -> None:
    assert parse_start(None) is None
    assert parse_start("earliest") == "earliest"
    assert parse_start(("abc", 5)) == Position("abc", 5)
    assert parse_start(Position("abc", 0)) == Position("abc", 0)
    for bad in ("latest", ("", 5), ("abc", -1), ("abc",), ("abc", "5")):
        with pytest.raises(ValueError, match="after must be"):
            parse_start(bad)  # type: ignore[arg-type]
