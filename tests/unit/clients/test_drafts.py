"""tickstream_client.drafts: ticks to publish, refused locally when the feed would refuse them
(one bad tick would otherwise take its whole batch down)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from google.protobuf import json_format
from tickstream.v1 import ingest_pb2, tick_pb2
from tickstream_client import check_draft, draft_from, quote, trade

from feed_service.ingest import InvalidDraft
from feed_service.ingest import check_draft as feed_check


def test_trade_and_quote_builders() -> None:
    draft = trade(
        "BTCUSDT",
        "61837.63000000",
        Decimal("0.5"),
        trade_id="17",
        side="sell",
        event_time="2024-08-08T23:54:20.816Z",
        dedup_id="17",
    )
    assert draft.trade.price == "61837.63000000" and draft.trade.size == "0.5"
    assert draft.trade.side == tick_pb2.SIDE_SELL and draft.dedup_id == "17"
    assert draft.event_time.ToNanoseconds() == 1_723_161_260_816_000_000
    when = datetime(2024, 8, 8, tzinfo=UTC)
    assert trade("A", 1, 2, event_time=when).event_time.ToDatetime(UTC) == when
    assert trade("A", "1", "2", event_time=5).event_time.ToNanoseconds() == 5
    assert not trade("A", "1", "2").HasField("event_time"), "unset means the feed's now"
    book = quote("ETHUSDT", "1.0", "2", "1.1", "3")
    assert (book.quote.bid_price, book.quote.ask_size) == ("1.0", "3")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: trade("btcusdt", "1", "1"), "symbol"),
        (lambda: trade("A", 1.5, "1"), "price: pass a decimal string"),  # type: ignore[arg-type]
        (lambda: trade("A", "-1", "1"), "trade.price"),
        (lambda: trade("A", "1e5", "1"), "trade.price"),
        (lambda: trade("A", "1", ""), "trade.size"),
        (lambda: trade("A", "1", "1", side="up"), "side"),
        (lambda: trade("A", "1", "1", trade_id="x" * 129), "trade_id"),
        (lambda: trade("A", "1", "1", dedup_id="x" * 129), "dedup_id"),
        (lambda: trade("A", "1", "1", event_time="yesterday"), "event_time"),
        (lambda: trade("A", "1", "1", event_time=datetime(2024, 1, 1)), "naive"),
        (lambda: quote("A", "2", "1", "1.5", "1"), "above ask"),
    ],
)
def test_malformed_ticks_are_refused_before_sending(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


def test_draft_from_json_shape_and_messages() -> None:
    camel = {
        "symbol": "ACME",
        "eventTime": "2024-08-08T23:54:20.816Z",
        "dedupId": "7",
        "trade": {"price": "10.5", "size": "3", "tradeId": "7", "side": "SIDE_BUY"},
    }
    snake = {"symbol": "ACME", "dedup_id": "8", "quote": {"bid_price": "1", "bid_size": "1",
             "ask_price": "2", "ask_size": "1"}}  # fmt: skip
    assert draft_from(camel).trade.trade_id == "7"
    assert draft_from(snake).quote.ask_price == "2"
    message = ingest_pb2.TickDraft(symbol="ACME", trade=tick_pb2.Trade(price="1", size="1"))
    copy = draft_from(message)
    copy.dedup_id = "changed"
    assert message.dedup_id == "", "the caller's message is not modified"
    with pytest.raises(ValueError, match="not a TickDraft"):
        draft_from({"symbol": "ACME", "colour": "red"})
    with pytest.raises(ValueError, match="body"):
        draft_from({"symbol": "ACME"})


@pytest.mark.parametrize(
    "draft",
    [
        ingest_pb2.TickDraft(symbol="A", trade=tick_pb2.Trade(price="1.", size="1")),
        ingest_pb2.TickDraft(symbol="A" * 33, trade=tick_pb2.Trade(price="1", size="1")),
        ingest_pb2.TickDraft(symbol="A", quote=tick_pb2.Quote(bid_price="1", bid_size="1")),
        ingest_pb2.TickDraft(symbol="A", trade=tick_pb2.Trade(price="1", size="1")),
    ],
)
def test_local_check_agrees_with_the_feed(draft: ingest_pb2.TickDraft) -> None:
    """Whatever the client refuses, the feed refuses too, and the other way round."""
    try:
        feed_check(0, draft)
        feed_ok = True
    except InvalidDraft:
        feed_ok = False
    try:
        check_draft(draft)
        client_ok = True
    except ValueError:
        client_ok = False
    assert client_ok == feed_ok


def test_book_drafts_are_checked_as_the_feed_checks_them() -> None:
    snapshot = draft_from(
        {
            "symbol": "ACME",
            "book": {"bids": [{"price": "10.5", "size": "3"}], "snapshot": True},
        }
    )
    feed_check(0, snapshot)
    for bad, where in (
        ({"bids": [{"price": "10.5", "size": "0"}], "snapshot": True}, "book.bids[0].size"),
        ({"asks": [{"price": "1e3", "size": "1"}]}, "book.asks[0].price"),
    ):
        with pytest.raises(ValueError, match=where.replace("[", r"\[").replace("]", r"\]")):
            draft_from({"symbol": "ACME", "book": bad})
        draft = ingest_pb2.TickDraft(symbol="ACME")
        json_format.ParseDict(bad, draft.book)
        with pytest.raises(InvalidDraft):
            feed_check(0, draft)
