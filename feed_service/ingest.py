"""The one way in: validate, deduplicate and number tick drafts from any source.

Producers' ``Publish`` streams and the built-in sources (replay, synthetic, binance) all store
ticks through :meth:`Ingestor.ingest`, so a tick is checked and numbered the same way whoever
sent it. A batch is atomic: the first invalid tick raises :class:`InvalidDraft` naming its index
and field before anything of the batch is stored.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Container, Sequence
from dataclasses import dataclass
from decimal import Decimal

from tickstream.v1 import feed_pb2, ingest_pb2, tick_pb2

from tickstream_common.book import is_zero
from tickstream_common.symbols import SYMBOL_PATTERN, is_valid_symbol

from .bars import BarMaker
from .errors import AlreadyStored, InvalidRequest, LimitExceeded
from .hub import TickHub
from .liveness import SourceHandle

DECIMAL_PATTERN = re.compile(r"[0-9]{1,40}(\.[0-9]{1,40})?")
"""Prices and sizes: digits, optionally a point and more digits; no sign, exponent or spaces."""
MAX_DEDUP_ID = 128
MAX_TRADE_ID = 128
MAX_BOOK_LEVELS = 5_000  # a side, in one update
MAX_TIMESTAMP_S = 253_402_300_799  # 9999-12-31T23:59:59Z, the protobuf Timestamp range
# Every decimal of a body in one match: the common case costs one regex call; a failure is
# then located field by field.
DECIMAL_PAIR = re.compile(rf"{DECIMAL_PATTERN.pattern} {DECIMAL_PATTERN.pattern}")
DECIMAL_QUAD = re.compile(" ".join([DECIMAL_PATTERN.pattern] * 4))
SIDES = frozenset(tick_pb2.Side.values())
TRADE_DECIMALS = ("price", "size")
QUOTE_DECIMALS = ("bid_price", "bid_size", "ask_price", "ask_size")


class InvalidDraft(InvalidRequest):
    """A tick of a batch is malformed: INVALID_ARGUMENT; nothing of the batch is stored."""

    def __init__(self, index: int, field: str, problem: str) -> None:
        where = f"ticks[{index}].{field}" if field else f"ticks[{index}]"
        super().__init__(f"{where}: {problem}; the batch was rejected and nothing of it stored")
        self.index = index
        self.field = field


def make_draft(
    symbol: str,
    event_time_ns: int,
    body: tick_pb2.Trade | tick_pb2.Quote | tick_pb2.BookUpdate,
    dedup_id: str = "",
) -> ingest_pb2.TickDraft:
    """A ``TickDraft`` message; ``event_time_ns`` in ns since the Unix epoch (UTC)."""
    draft = ingest_pb2.TickDraft(symbol=symbol, dedup_id=dedup_id)
    if isinstance(body, tick_pb2.Trade):
        draft.trade.CopyFrom(body)
    elif isinstance(body, tick_pb2.Quote):
        draft.quote.CopyFrom(body)
    else:
        draft.book.CopyFrom(body)
    draft.event_time.FromNanoseconds(event_time_ns)
    return draft


def _shown(text: str) -> str:
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


def _check_decimals(index: int, body: object, prefix: str, names: Sequence[str]) -> None:
    for name in names:
        value = getattr(body, name)
        if not DECIMAL_PATTERN.fullmatch(value):
            problem = "is empty" if not value else f"{_shown(value)} is not a decimal string"
            raise InvalidDraft(
                index, f"{prefix}.{name}", f"{problem} (expected {DECIMAL_PATTERN.pattern})"
            )


def _too_long(text: str, limit: int) -> bool:
    """More than ``limit`` bytes in UTF-8 (encoded only when it is not ASCII)."""
    return len(text) > limit or (not text.isascii() and len(text.encode()) > limit)


def _bid_above_ask(bid: str, ask: str) -> bool:
    """Exact ``bid > ask`` for decimal strings. Rounding to float is monotonic, so unequal
    floats order the decimals the same way; only equal floats need the exact comparison."""
    fast_bid, fast_ask = float(bid), float(ask)
    if fast_bid != fast_ask:
        return fast_bid > fast_ask
    return Decimal(bid) > Decimal(ask)


def _check_book(index: int, book: tick_pb2.BookUpdate) -> None:
    """A book update's levels: decimal strings, at most MAX_BOOK_LEVELS a side, no zero size in
    a snapshot; update ids in order."""
    for side in ("bids", "asks"):
        levels = getattr(book, side)
        if len(levels) > MAX_BOOK_LEVELS:
            raise InvalidDraft(
                index, f"book.{side}", f"has {len(levels)} levels; at most {MAX_BOOK_LEVELS}"
            )
        for number, level in enumerate(levels):
            if not DECIMAL_PAIR.fullmatch(f"{level.price} {level.size}"):
                _check_decimals(index, level, f"book.{side}[{number}]", TRADE_DECIMALS)
            if book.snapshot and is_zero(level.size):
                raise InvalidDraft(
                    index, f"book.{side}[{number}].size", "is 0 in a snapshot (only updates remove)"
                )
    if book.snapshot:
        _check_snapshot(index, book)
    if book.first_update_id > book.last_update_id:
        raise InvalidDraft(
            index,
            "book.first_update_id",
            f"{book.first_update_id} is above book.last_update_id {book.last_update_id}",
        )


def _check_snapshot(index: int, book: tick_pb2.BookUpdate) -> None:
    """A whole book: no price twice on a side, the best bid below the best ask."""
    best: dict[str, Decimal] = {}
    for side, pick in (("bids", max), ("asks", min)):
        prices = [Decimal(level.price) for level in getattr(book, side)]
        if len(set(prices)) != len(prices):
            raise InvalidDraft(index, f"book.{side}", "holds a price twice in a snapshot")
        if prices:
            best[side] = pick(prices)
    if len(best) == 2 and best["bids"] >= best["asks"]:
        raise InvalidDraft(
            index, "book.bids", f"best bid {best['bids']} is not below best ask {best['asks']}"
        )


def check_draft(index: int, draft: ingest_pb2.TickDraft, known: Container[str] = ()) -> None:
    """Raise :class:`InvalidDraft` naming the first malformed field of ``draft``; symbols in
    ``known`` are valid already (a shortcut past the symbol rule)."""
    symbol = draft.symbol
    if symbol not in known:
        if not symbol:
            raise InvalidDraft(index, "symbol", "is empty")
        if not is_valid_symbol(symbol):
            raise InvalidDraft(
                index, "symbol", f"{_shown(symbol)} does not match {SYMBOL_PATTERN.pattern}"
            )
    body = draft.WhichOneof("body")
    if body == "trade":
        trade = draft.trade
        if not DECIMAL_PAIR.fullmatch(f"{trade.price} {trade.size}"):
            _check_decimals(index, trade, "trade", TRADE_DECIMALS)
        if _too_long(trade.trade_id, MAX_TRADE_ID):
            raise InvalidDraft(index, "trade.trade_id", f"is over {MAX_TRADE_ID} bytes (UTF-8)")
        if trade.side not in SIDES:
            raise InvalidDraft(index, "trade.side", f"{trade.side} is not a Side")
    elif body == "quote":
        quote = draft.quote
        bid, ask = quote.bid_price, quote.ask_price
        if not DECIMAL_QUAD.fullmatch(f"{bid} {quote.bid_size} {ask} {quote.ask_size}"):
            _check_decimals(index, quote, "quote", QUOTE_DECIMALS)
        if _bid_above_ask(bid, ask):
            raise InvalidDraft(index, "quote.bid_price", f"{bid} is above quote.ask_price {ask}")
    elif body == "book":
        _check_book(index, draft.book)
    elif body == "bar":
        raise InvalidDraft(index, "bar", "is made by the feed from trades; publish the trades")
    else:
        raise InvalidDraft(index, "body", "is missing: set trade, quote or book")
    if _too_long(draft.dedup_id, MAX_DEDUP_ID):
        raise InvalidDraft(index, "dedup_id", f"is over {MAX_DEDUP_ID} bytes (UTF-8)")
    if draft.HasField("event_time"):
        stamp = draft.event_time
        if not (0 <= stamp.seconds <= MAX_TIMESTAMP_S and 0 <= stamp.nanos < 1_000_000_000):
            raise InvalidDraft(index, "event_time", "is outside 1970-01-01..9999-12-31")


class DedupWindow:
    """The last ``capacity`` (symbol, dedup id) pairs stored, feed-wide, oldest forgotten first.

    Memory is bounded by ``capacity`` (about 200 bytes a pair with short ids, up to about 400
    with 128-byte ones). 0 turns deduplication off.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._order: deque[tuple[str, str]] = deque()
        self._seen: set[tuple[str, str]] = set()

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, key: tuple[str, str]) -> None:
        if key in self._seen:
            return
        self._seen.add(key)
        self._order.append(key)
        if len(self._order) > self.capacity:
            self._seen.discard(self._order.popleft())


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What became of a batch: ticks stored, duplicates skipped, the last offset stored (the
    head offset when nothing was)."""

    accepted: int
    duplicates: int
    last_offset: int


def _decimals(value: str) -> int:
    point = value.find(".")
    return 0 if point < 0 else len(value) - point - 1


class Ingestor:
    """Validates, deduplicates and numbers batches into the hub; the single way in.

    ``max_symbols`` caps how many symbols the feed serves: a batch that would introduce more
    raises LimitExceeded (RESOURCE_EXHAUSTED) naming the tick. Symbols first seen in a batch
    are declared with the source's name and the most decimals seen in their prices and sizes.
    """

    def __init__(
        self,
        hub: TickHub,
        dedup_window: int,
        max_symbols: int,
        bar_intervals: Sequence[str] = (),
    ) -> None:
        self._hub = hub
        self.bars = BarMaker(bar_intervals)
        self._bar_lock = asyncio.Lock()
        self.dedup = DedupWindow(dedup_window)
        self._max_symbols = max_symbols
        self._scales: dict[str, tuple[int, int]] = {}

    async def ingest(
        self, drafts: Sequence[ingest_pb2.TickDraft], source: SourceHandle
    ) -> IngestResult:
        """Store ``drafts`` in order, all or nothing; their ``dedup_id`` is cleared.

        Raises InvalidDraft (a malformed tick, nothing stored), LimitExceeded (the symbol cap)
        or NotReady (the backbone cannot store now; nothing stored, dedup ids not recorded).
        """
        hub = self._hub
        known = hub.known_symbols
        for index, draft in enumerate(drafts):
            check_draft(index, draft, known)
        self._check_book_starts(drafts)
        await self._declare_new_symbols(drafts, source.name)
        kept, keys = self._without_duplicates(drafts)
        if not kept:
            return IngestResult(0, len(drafts), hub.head_offset)
        now_ns = hub.clock_ns()
        try:
            last = await self._append(kept, now_ns)
        except AlreadyStored:
            last, kept, keys = await self._store_around_duplicates(drafts, now_ns)
        dedup = self.dedup
        if dedup.capacity:
            for key in keys:  # only once stored: a refused batch may be sent again
                dedup.add(key)
        source.record(len(kept), now_ns)
        return IngestResult(len(kept), len(drafts) - len(kept), last)

    async def _store_around_duplicates(
        self, drafts: Sequence[ingest_pb2.TickDraft], now_ns: int
    ) -> tuple[int, Sequence[ingest_pb2.TickDraft], list[tuple[str, str]]]:
        """After the backbone refused ``drafts`` as holding a dedup id it stored already
        (another replica took the same resent batch first): catch up, so this replica's window
        knows what the others stored, and store the rest. Ticks the backbone still refuses (ids
        this window has forgotten, within JetStream's own duplicate window) are then stored one
        by one, the refused ones being the duplicates. (last offset, stored drafts, their keys)"""
        await self._hub.catch_up()
        kept, keys = self._without_duplicates(drafts)
        if not kept:
            return self._hub.head_offset, kept, keys
        try:
            return await self._append(kept, now_ns), kept, keys
        except AlreadyStored:
            pass
        last, stored, stored_keys = self._hub.head_offset, [], []
        for draft in kept:
            key = (draft.symbol, draft.dedup_id)  # the backbone clears it once stored
            try:
                last = await self._append([draft], now_ns)
            except AlreadyStored:
                continue
            stored.append(draft)
            if key[1]:
                stored_keys.append(key)
        return last, stored, stored_keys

    async def _append(self, kept: Sequence[ingest_pb2.TickDraft], now_ns: int) -> int:
        """Store ``kept`` and the bar updates their trades make; the last offset. Raises as
        ``TickHub.append`` does (the bars are made again at the next attempt)."""
        async with self._bar_lock:  # a bar's updates are stored in the order they are made
            bars, commit = self.bars.on_trades(kept, now_ns)
            last = await self._hub.append([*kept, *bars] if bars else kept, now_ns)
            commit()
        return last

    def _check_book_starts(self, drafts: Sequence[ingest_pb2.TickDraft]) -> None:
        """Raise InvalidDraft for a book update of a symbol that has no book yet (no snapshot
        stored, none earlier in the batch): it could only be dropped."""
        started: set[str] = set()
        books = self._hub.books
        for index, draft in enumerate(drafts):
            if not draft.HasField("book"):
                continue
            if draft.book.snapshot:
                started.add(draft.symbol)
            elif draft.symbol not in started and not books.has_book(draft.symbol):
                raise InvalidDraft(
                    index,
                    "book",
                    f"is an update of {draft.symbol}, which has no book yet; publish a snapshot "
                    "(snapshot: true) first",
                )

    async def publish_due_bars(self) -> None:
        """Store the open bars' updates that are due (see :meth:`BarMaker.due`). Raises
        NotReady when the backbone cannot store them now (they stay due)."""
        async with self._bar_lock:
            drafts, commit = self.bars.due()
            if drafts:
                await self._hub.append(drafts, self._hub.clock_ns())
                commit()

    def _without_duplicates(
        self, drafts: Sequence[ingest_pb2.TickDraft]
    ) -> tuple[Sequence[ingest_pb2.TickDraft], list[tuple[str, str]]]:
        """The drafts to store, duplicates (in the window, or earlier in the batch) left out,
        and the (symbol, dedup id) keys to record once they are stored. The backbone clears
        the kept drafts' dedup ids (they are not part of a tick; JetStream keeps them beside
        it)."""
        if not any(draft.dedup_id for draft in drafts):
            return drafts, []
        dedup = self.dedup
        if not dedup.capacity:  # deduplication off: the ids go no further (nor to JetStream)
            for draft in drafts:
                draft.ClearField("dedup_id")
            return drafts, []
        kept: list[ingest_pb2.TickDraft] = []
        keys: list[tuple[str, str]] = []
        in_batch: set[tuple[str, str]] = set()
        for draft in drafts:
            if draft.dedup_id:
                key = (draft.symbol, draft.dedup_id)
                if key in dedup or key in in_batch:
                    continue
                in_batch.add(key)
                keys.append(key)
            kept.append(draft)
        return kept, keys

    async def _declare_new_symbols(
        self, drafts: Sequence[ingest_pb2.TickDraft], origin: str
    ) -> None:
        hub, scales = self._hub, self._scales
        new: dict[str, tuple[int, int]] = {}
        for index, draft in enumerate(drafts):
            symbol = draft.symbol
            if hub.knows(symbol):
                continue
            if symbol not in new and hub.symbol_count + len(new) >= self._max_symbols:
                raise LimitExceeded(
                    f"ticks[{index}].symbol: {symbol} would be symbol number "
                    f"{hub.symbol_count + len(new) + 1}, over the feed's cap of "
                    f"{self._max_symbols} (--max-symbols); nothing of the batch was stored"
                )
            price, size = new.get(symbol, scales.get(symbol, (0, 0)))
            body = draft.WhichOneof("body")
            if body == "trade":
                price = max(price, _decimals(draft.trade.price))
                size = max(size, _decimals(draft.trade.size))
            elif body == "quote":
                quote = draft.quote
                price = max(price, _decimals(quote.bid_price), _decimals(quote.ask_price))
                size = max(size, _decimals(quote.bid_size), _decimals(quote.ask_size))
            new[symbol] = (price, size)
        if new:
            scales.update(new)
            await hub.declare(
                feed_pb2.SymbolInfo(symbol=s, price_scale=p, size_scale=z, source=origin)
                for s, (p, z) in new.items()
            )
