"""The feed's books as of any retained offset (feed_service.books), through the hub."""

from __future__ import annotations

import random

import pytest
from tickstream.v1 import feed_pb2, ingest_pb2, tick_pb2

from feed_service import books
from feed_service.hub import TickHub
from tickstream_common.book import OrderBook


def book_draft(rng: random.Random, update_id: int, snapshot: bool) -> ingest_pb2.TickDraft:
    draft = ingest_pb2.TickDraft(symbol="BOOK")
    update = draft.book
    update.snapshot = snapshot
    update.first_update_id = update.last_update_id = update_id
    for side, base in ((update.bids, 100), (update.asks, 101)):
        for _ in range(30 if snapshot else 3):
            size = "0" if not snapshot and rng.random() < 0.3 else f"{rng.randint(1, 9)}.5"
            side.add(
                price=f"{base + rng.randint(0, 40) * (-1 if base == 100 else 1)}.25", size=size
            )
    return draft


def test_book_at_every_offset_matches_a_rebuild(monkeypatch: pytest.MonkeyPatch) -> None:
    """With checkpoints every 4 updates and a history of 50 ticks (books and trades mixed), the
    book at each retained offset equals the updates applied from the start; before the first
    snapshot there is none."""
    monkeypatch.setattr(books, "CHECKPOINT_EVERY", 4)
    rng = random.Random(7)
    hub = TickHub(50)
    hub.add_symbols([feed_pb2.SymbolInfo(symbol="BOOK")])
    applied: dict[int, tick_pb2.BookUpdate] = {}
    trade = ingest_pb2.TickDraft(symbol="BOOK", trade=tick_pb2.Trade(price="1", size="1"))
    assert hub.book_bases(["BOOK"], 0) == []
    for number in range(1, 120):
        draft = trade if number % 3 == 0 else book_draft(rng, number, snapshot=number in (2, 80))
        offset = hub.publish([draft])
        if draft.HasField("book"):
            applied[offset] = draft.book
    history = hub.history
    for offset in range(history.earliest_offset - 1, history.head_offset + 1):
        expected = OrderBook()
        for at in sorted(applied):
            if at <= offset:
                expected.apply(applied[at])
        (base,) = hub.book_bases(["BOOK"], offset)
        book = base.tick.book
        assert book.snapshot
        top = expected.top(1000)
        assert [(lv.price, lv.size) for lv in book.bids] == top[0], offset
        assert [(lv.price, lv.size) for lv in book.asks] == top[1], offset
        assert base.offset == max(at for at in applied if at <= offset)
        assert book.last_update_id == applied[base.offset].last_update_id
