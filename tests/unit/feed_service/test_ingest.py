"""feed_service.ingest: validation names the tick and field, batches are atomic, duplicates
are dropped within a bounded window, and the symbol cap holds."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from tickstream.v1 import ingest_pb2, tick_pb2

from feed_service.errors import AlreadyStored, LimitExceeded, NotReady
from feed_service.hub import TickHub
from feed_service.ingest import DedupWindow, Ingestor, InvalidDraft, check_draft, make_draft
from feed_service.liveness import Liveness


def trade(symbol: str = "NEW", price: str = "1.25", dedup: str = "") -> ingest_pb2.TickDraft:
    return make_draft(symbol, 1_000, tick_pb2.Trade(price=price, size="2"), dedup)


def quote(bid: str = "1.0", ask: str = "1.1") -> ingest_pb2.TickDraft:
    body = tick_pb2.Quote(bid_price=bid, bid_size="1", ask_price=ask, ask_size="1")
    return make_draft("NEW", 1_000, body)


def book(
    bids: list[tuple[str, str]],
    snapshot: bool = False,
    first: int = 0,
    last: int = 0,
    asks: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> ingest_pb2.TickDraft:
    update = tick_pb2.BookUpdate(snapshot=snapshot, first_update_id=first, last_update_id=last)
    update.bids.extend(tick_pb2.BookLevel(price=p, size=s) for p, s in bids)
    update.asks.extend(tick_pb2.BookLevel(price=p, size=s) for p, s in asks)
    return make_draft("NEW", 1_000, update)


def ingestor(dedup: int = 100, max_symbols: int = 10) -> tuple[Ingestor, TickHub]:
    hub = TickHub(history_size=1_000)
    return Ingestor(hub, dedup, max_symbols), hub


BAD = [
    (trade(price="1e5"), "trade.price", "not a decimal string"),
    (trade(price="1.5f"), "trade.price", "not a decimal string"),
    (trade(price="-1"), "trade.price", "not a decimal string"),
    (trade(price=".5"), "trade.price", "not a decimal string"),
    (trade(price="1."), "trade.price", "not a decimal string"),
    (trade(price=" 1"), "trade.price", "not a decimal string"),
    (trade(price=""), "trade.price", "is empty"),
    (trade(price="1" * 41), "trade.price", "not a decimal string"),
    (trade(symbol=""), "symbol", "is empty"),
    (trade(symbol="btc usdt"), "symbol", "does not match"),
    (trade(symbol="X" * 33), "symbol", "does not match"),
    (quote(bid="2.0", ask="1.99"), "quote.bid_price", "is above quote.ask_price"),
    (quote(ask="NaN"), "quote.ask_price", "not a decimal string"),
    (ingest_pb2.TickDraft(symbol="NEW"), "body", "is missing"),
    (trade(dedup="d" * 129), "dedup_id", "over 128"),
    (book([("1.5", "2"), ("1e3", "1")]), "book.bids[1].price", "not a decimal string"),
    (book([("1.5", "")]), "book.bids[0].size", "is empty"),
    (book([("1.5", "0.000")], snapshot=True), "book.bids[0].size", "is 0 in a snapshot"),
    (book([("1", "1")] * 5_001), "book.bids", "at most 5000"),
    (book([], first=9, last=8), "book.first_update_id", "is above book.last_update_id 8"),
    (book([("1.5", "1"), ("1.50", "2")], snapshot=True), "book.bids", "a price twice"),
    (book([("2", "1")], snapshot=True, asks=[("2.0", "1")]), "book.bids", "is not below best ask"),
]


@pytest.mark.parametrize(("draft", "field", "problem"), BAD, ids=[f for _, f, _ in BAD])
def test_a_malformed_draft_is_named_by_index_and_field(
    draft: ingest_pb2.TickDraft, field: str, problem: str
) -> None:
    with pytest.raises(InvalidDraft) as caught:
        check_draft(7, draft)
    assert caught.value.index == 7
    assert caught.value.field == field
    assert str(caught.value).startswith(f"ticks[7].{field}: ")
    assert problem in str(caught.value)


def test_book_updates_pass_and_a_diff_may_remove_levels() -> None:
    check_draft(0, book([("1.5", "0"), ("1.25", "3.0")], first=5, last=9))
    check_draft(0, book([("1.5", "2")], snapshot=True, first=9, last=9))


def test_locked_quote_and_exact_decimals_pass() -> None:
    check_draft(0, quote(bid="61837.63000000", ask="61837.63000000"))
    check_draft(0, trade(price="0.00000001"))


async def test_a_batch_is_all_or_nothing() -> None:
    ingest, hub = ingestor()
    with pytest.raises(InvalidDraft, match=r"ticks\[2\]\.trade\.price"):
        await ingest.ingest([trade(), trade(), trade(price="1,5")], Liveness(5).source("p"))
    assert hub.head_offset == 0 and not hub.knows("NEW"), "nothing stored, no symbol declared"


async def test_duplicates_by_symbol_and_dedup_id_are_counted_not_stored() -> None:
    ingest, _ = ingestor()
    source = Liveness(5).source("p")
    first = await ingest.ingest([trade(dedup="a"), trade(dedup="b"), trade()], source)
    assert (first.accepted, first.duplicates, first.last_offset) == (3, 0, 3)
    again = await ingest.ingest(
        [trade(dedup="a"), trade(dedup="c"), trade(dedup="c"), trade("OTHER", dedup="a")], source
    )
    assert (again.accepted, again.duplicates, again.last_offset) == (2, 2, 5)
    only_dupes = await ingest.ingest([trade(dedup="b")], source)
    assert (only_dupes.accepted, only_dupes.duplicates, only_dupes.last_offset) == (0, 1, 5)
    assert source.ticks == 5


def test_the_dedup_window_forgets_the_oldest_first() -> None:
    window = DedupWindow(2)
    for key in (("A", "1"), ("A", "2"), ("A", "3")):
        window.add(key)
    assert ("A", "1") not in window and ("A", "3") in window and len(window) == 2


async def test_new_symbols_are_declared_with_scales_and_the_cap_holds() -> None:
    ingest, hub = ingestor(max_symbols=2)
    source = Liveness(5).source("publish:desk")
    await ingest.ingest([trade("ONE", price="1.250"), trade("TWO")], source)
    info = {i.symbol: i for i in hub.symbols()}["ONE"]
    assert (info.price_scale, info.size_scale, info.source) == (3, 0, "publish:desk")
    with pytest.raises(LimitExceeded, match=r"ticks\[1\]\.symbol: THREE .* cap of 2"):
        await ingest.ingest([trade("ONE"), trade("THREE")], source)
    assert hub.head_offset == 2


async def test_a_tick_without_event_time_takes_the_ingest_time() -> None:
    ingest, hub = ingestor()
    draft = ingest_pb2.TickDraft(symbol="NEW", trade=tick_pb2.Trade(price="1", size="1"))
    await ingest.ingest([draft], Liveness(5).source("p"))
    tick = next(hub.history.after(0, 1)).tick
    assert tick.event_time == tick.ingest_time


class RefusingHub(TickHub):
    """A backbone that cannot store the first batch it is given (JetStream unreachable)."""

    refusals = 1

    async def append(self, drafts: Sequence[ingest_pb2.TickDraft], ingest_ns: int) -> int:
        if self.refusals:
            self.refusals -= 1
            raise NotReady("the backbone is unavailable")
        return await super().append(drafts, ingest_ns)


async def test_a_batch_the_backbone_refused_is_not_remembered_as_seen() -> None:
    hub = RefusingHub(history_size=100)
    ingest = Ingestor(hub, dedup_window=100, max_symbols=10)
    source = Liveness(5).source("p")
    with pytest.raises(NotReady):
        await ingest.ingest([trade(dedup="a")], source)
    resent = await ingest.ingest([trade(dedup="a")], source)
    assert (resent.accepted, resent.duplicates, hub.head_offset) == (1, 0, 1)


async def test_a_book_update_needs_the_symbols_snapshot_first() -> None:
    ingest, _ = ingestor()
    handle = Liveness(stale_after=10.0).source("test")
    with pytest.raises(InvalidDraft) as caught:
        await ingest.ingest([book([("1", "1")])], handle)
    assert caught.value.field == "book" and "no book yet" in str(caught.value)
    snapshot = book([("1", "1")], snapshot=True, asks=[("2", "1")])
    result = await ingest.ingest([snapshot, book([("1", "0")])], handle)  # one batch: fine
    assert result.accepted == 2
    assert (await ingest.ingest([book([("1.5", "3")])], handle)).accepted == 1


class SharedStreamHub(TickHub):
    """A hub on a shared stream where another replica stored ``elsewhere`` (symbol, dedup id)
    pairs this one has not read yet: the backbone refuses a batch holding one (AlreadyStored),
    and ``catch_up`` reads them into the ingest path's window."""

    def __init__(self, elsewhere: set[tuple[str, str]]) -> None:
        super().__init__(history_size=100)
        self.elsewhere, self.window = elsewhere, DedupWindow(0)
        self.refused = 0

    async def append(self, drafts: Sequence[ingest_pb2.TickDraft], ingest_ns: int) -> int:
        if any((d.symbol, d.dedup_id) in self.elsewhere for d in drafts):
            self.refused += 1
            raise AlreadyStored("a dedup id is stored already")
        return await super().append(drafts, ingest_ns)

    async def catch_up(self) -> None:
        for key in self.elsewhere:
            self.window.add(key)


async def test_ticks_another_replica_stored_are_duplicates_and_the_rest_is_stored() -> None:
    hub = SharedStreamHub({("NEW", "b")})
    ingest = Ingestor(hub, dedup_window=100, max_symbols=10)
    hub.window = ingest.dedup
    result = await ingest.ingest(
        [trade(dedup="a"), trade(dedup="b"), trade(dedup="c")], Liveness(5).source("p")
    )
    assert (result.accepted, result.duplicates, hub.refused, hub.head_offset) == (2, 1, 1, 2)


async def test_ticks_only_the_backbone_still_knows_are_told_apart_one_by_one() -> None:
    """The feed's window forgot an id that JetStream's duplicate window still holds: catching
    up teaches nothing, so the batch is stored tick by tick and the refused tick counts as a
    duplicate (not UNAVAILABLE until JetStream forgets it too)."""
    hub = SharedStreamHub({("NEW", "b")})  # catch_up below teaches a window nobody reads
    ingest = Ingestor(hub, dedup_window=100, max_symbols=10)
    result = await ingest.ingest(
        [trade(dedup="a"), trade(dedup="b"), trade(dedup="c")], Liveness(5).source("p")
    )
    assert (result.accepted, result.duplicates, hub.head_offset) == (2, 1, 2)
    assert ("NEW", "a") in ingest.dedup and ("NEW", "b") not in ingest.dedup


async def test_with_deduplication_off_a_resent_tick_is_stored_again() -> None:
    hub = SharedStreamHub(set())
    ingest = Ingestor(hub, dedup_window=0, max_symbols=10)
    source = Liveness(5).source("p")
    first, again = [trade(dedup="a")], [trade(dedup="a")]
    await ingest.ingest(first, source)
    result = await ingest.ingest(again, source)
    assert (result.accepted, hub.head_offset) == (1, 2)
    assert not again[0].dedup_id, "the id goes no further than the ingest path"
