"""The order book kept from BookUpdate messages (tickstream_common.book)."""

from __future__ import annotations

from tickstream.v1 import tick_pb2

from tickstream_common.book import OrderBook, is_zero


def update(
    bids: list[tuple[str, str]], asks: list[tuple[str, str]], snapshot: bool = False, last: int = 0
) -> tick_pb2.BookUpdate:
    message = tick_pb2.BookUpdate(snapshot=snapshot, first_update_id=last, last_update_id=last)
    message.bids.extend(tick_pb2.BookLevel(price=p, size=s) for p, s in bids)
    message.asks.extend(tick_pb2.BookLevel(price=p, size=s) for p, s in asks)
    return message


def test_zero_sizes() -> None:
    assert is_zero("0") and is_zero("0.00000000") and is_zero("000.0")
    assert not is_zero("0.00000001") and not is_zero("10") and not is_zero("100.0")


def test_snapshot_then_updates_keep_price_order_and_exact_text() -> None:
    book = OrderBook()
    book.apply(update([("1.0", "5")], [("3.0", "1")]))
    assert not book.valid  # no snapshot yet
    book.apply(
        update([("99.50", "1.0"), ("100.00", "2.0")], [("100.50", "3.0")], snapshot=True, last=7)
    )
    assert book.valid and book.last_update_id == 7
    assert book.top(10) == ([("100.00", "2.0"), ("99.50", "1.0")], [("100.50", "3.0")])
    # the same price in other digits is the same level; size 0 removes; new levels sort in
    book.apply(update([("100.0", "0.000"), ("99.75", "4")], [("100.25", "1.10")], last=9))
    assert book.top(1) == ([("99.75", "4")], [("100.25", "1.10")])
    assert book.top(10) == (
        [("99.75", "4"), ("99.50", "1.0")],
        [("100.25", "1.10"), ("100.50", "3.0")],
    )
    assert book.last_update_id == 9 and len(book) == 4
    # removing an absent level is nothing
    book.apply(update([("1", "0")], []))
    assert len(book) == 4


def test_snapshot_message_and_copy_are_independent() -> None:
    book = OrderBook()
    book.apply(update([("2", "1"), ("1", "1")], [("3", "1"), ("4", "1")], snapshot=True, last=3))
    copy = book.copy()
    book.apply(update([("2", "0")], [], last=4))
    snap = copy.snapshot()
    assert snap.snapshot and snap.last_update_id == 3 == snap.first_update_id
    assert [(lv.price, lv.size) for lv in snap.bids] == [("2", "1"), ("1", "1")]
    assert [(lv.price, lv.size) for lv in snap.asks] == [("3", "1"), ("4", "1")]
    assert book.top(5)[0] == [("1", "1")]
    assert book.top(0) == ([], [])
