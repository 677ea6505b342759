"""The feed's pre-serialized responses decode to exactly the messages protobuf would build."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from tickstream.v1 import feed_pb2, tick_pb2

from feed_service.wire import StoredTick, tick_batch_response, varint


def trade(offset: int, price: str) -> tick_pb2.Tick:
    tick = tick_pb2.Tick(symbol="BTCUSDT", sequence=offset, offset=offset)
    tick.trade.price, tick.trade.size, tick.trade.trade_id = price, "0.5", str(offset)
    tick.ingest_time.FromNanoseconds(1_700_000_000_123_456_789)
    return tick


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varint_round_trips_through_protobuf(value: int) -> None:
    # TickBatch.head_offset is a uint64: its encoding is key 0x10 then the varint.
    assert feed_pb2.TickBatch.FromString(b"\x10" + varint(value)).head_offset == value


@given(
    st.lists(st.text(min_size=1, max_size=300), max_size=40),
    st.integers(min_value=0, max_value=2**63),
)
def test_tick_batch_response_equals_the_message_built_by_protobuf(
    prices: list[str], head_offset: int
) -> None:
    ticks = [trade(offset, price) for offset, price in enumerate(prices, start=1)]
    stored = [StoredTick.of(t, tick_pb2.TICK_TYPE_TRADE) for t in ticks]
    expected = feed_pb2.SubscribeResponse()
    expected.ticks.ticks.extend(ticks)
    expected.ticks.head_offset = head_offset
    decoded = feed_pb2.SubscribeResponse.FromString(tick_batch_response(stored, head_offset))
    assert decoded == expected
    assert decoded.WhichOneof("event") == "ticks"
