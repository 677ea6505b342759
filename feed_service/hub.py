"""The hub: numbers ticks, keeps the history and the latest trade and quote per symbol."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Container, Iterable, Sequence

from tickstream.v1 import feed_pb2, ingest_pb2, tick_pb2

from .books import BookKeeper
from .history import TickHistory
from .liveness import Liveness
from .wire import DRAFT_TYPES, StoredTick, event_time_field, ingest_time_field

TRADE = tick_pb2.TICK_TYPE_TRADE
QUOTE = tick_pb2.TICK_TYPE_QUOTE
BOOK = tick_pb2.TICK_TYPE_BOOK
BAR = tick_pb2.TICK_TYPE_BAR


def new_epoch() -> str:
    """A fresh random epoch id (16 hex digits): never derived from the seed or the data."""
    return uuid.uuid4().hex[:16]


class TickHub:
    """In-process hub (``--backbone memory``): the single writer of sequence numbers and offsets.

    ``append`` assigns each tick its per-(symbol, type) ``sequence`` (from 1, contiguous) and
    the next feed-wide ``offset``, stamps ``ingest_time``, and ``store`` appends it to the
    history and wakes waiting subscribers. Subscribers read the history by offset, so a slow one
    costs no memory. The JetStream backbone (:mod:`feed_service.jetstream`) keeps this same
    state as its local cache of the shared log and replaces the writing half.
    """

    catch_up_s = 0.0
    """How long a resume from an offset ahead of the head waits for the head to reach it: 0 here,
    where nothing but this process can have issued that offset."""
    on_link: Callable[[bool], Awaitable[None]] | None = None
    """Told False when a shared backbone's connection is lost (the cache stops advancing) and
    True when it is back; never called in-process."""

    def __init__(
        self,
        history_size: int,
        clock_ns: Callable[[], int] = time.time_ns,
        liveness: Liveness | None = None,
    ) -> None:
        self.epoch = new_epoch()
        self.history: TickHistory[StoredTick] = TickHistory(history_size)
        self.clock_ns = clock_ns
        self.liveness = liveness
        self._symbols: dict[str, feed_pb2.SymbolInfo] = {}
        self._sequences: dict[tuple[str, int], int] = {}
        self._latest: dict[tuple[str, int], StoredTick] = {}
        self._bars: dict[tuple[str, str], StoredTick] = {}  # (symbol, interval) -> latest bar
        self.books = BookKeeper()
        self._advanced = asyncio.Event()
        self.ready = False

    @property
    def head_offset(self) -> int:
        return self.history.head_offset

    def add_symbols(self, infos: Iterable[feed_pb2.SymbolInfo]) -> None:
        """Declare symbols the feed serves (a source's metadata), replacing earlier entries."""
        for info in infos:
            self._symbols[info.symbol] = info

    def symbols(self, only: set[str] | None = None) -> list[feed_pb2.SymbolInfo]:
        """Metadata of every declared symbol (or of those in ``only``), sorted by symbol."""
        names = self._symbols if only is None else only & self._symbols.keys()
        return [self._symbols[name] for name in sorted(names)]

    def knows(self, symbol: str) -> bool:
        return symbol in self._symbols

    @property
    def known_symbols(self) -> Container[str]:
        """The declared symbols (a live view: membership tests only)."""
        return self._symbols.keys()

    @property
    def symbol_count(self) -> int:
        return len(self._symbols)

    async def start(self) -> None:
        """Nothing to connect to in-process (the JetStream backbone joins its log here)."""

    async def close(self) -> None:
        """Nothing to release in-process."""

    async def declare(self, infos: Iterable[feed_pb2.SymbolInfo]) -> None:
        """:meth:`add_symbols`, on every replica where the backbone is shared."""
        self.add_symbols(infos)

    async def append(self, drafts: Sequence[ingest_pb2.TickDraft], ingest_ns: int) -> int:
        """Number and store validated ``drafts`` in order, all or nothing; the last offset.

        The backbone's one way in (see :meth:`publish` for the contract); the JetStream backbone
        raises :class:`feed_service.errors.NotReady` when its log cannot take them now.
        """
        return self.publish(drafts, ingest_ns)

    def publish(self, drafts: Sequence[ingest_pb2.TickDraft], ingest_ns: int | None = None) -> int:
        """Number and store validated ``drafts`` in order; returns the new head offset.

        ``ingest_ns`` stamps every tick (default: now); a draft without ``event_time`` gets it
        as its event time too. Callers validate first (:class:`feed_service.ingest.Ingestor`);
        ``dedup_id`` is cleared here (it is not part of a Tick). Raises KeyError for a symbol
        that was not declared with :meth:`add_symbols`.
        """
        offset = self.history.head_offset
        if ingest_ns is None:
            ingest_ns = self.clock_ns()
        ingest_field = ingest_time_field(ingest_ns)
        both_fields = event_time_field(ingest_ns) + ingest_field
        known, sequences = self._symbols, self._sequences
        of_draft, stored_ticks = StoredTick.of_draft, []
        for draft in drafts:
            symbol = draft.symbol
            if symbol not in known:
                raise KeyError(symbol)
            if draft.dedup_id:
                draft.ClearField("dedup_id")  # not part of the tick
            kind = DRAFT_TYPES[draft.WhichOneof("body")]
            key = (symbol, kind)
            sequence = sequences.get(key, 0) + 1
            sequences[key] = sequence
            offset += 1
            times = ingest_field if draft.HasField("event_time") else both_fields
            stored_ticks.append(
                of_draft(draft.SerializeToString(), symbol, kind, sequence, offset, times)
            )
        self.store(stored_ticks, ingest_ns)
        return offset

    def store(self, ticks: list[StoredTick], now_ns: int) -> None:
        """Append numbered ``ticks`` (offsets contiguous from the head) to the history, keep each
        (symbol, type)'s latest, mark their symbols live at ``now_ns`` and wake subscribers.
        Raises ValueError, storing nothing, when the offsets do not follow the head."""
        if not ticks:
            return
        self.history.extend(ticks)
        if self.liveness is not None:
            # State changes come before the ticks: "live" precedes the tick that revived it.
            self.liveness.touch({tick.symbol for tick in ticks}, now_ns)
        latest = self._latest
        books: list[StoredTick] = []
        for tick in ticks:
            latest[(tick.symbol, tick.tick_type)] = tick
            if tick.tick_type > QUOTE:  # books and bars, a few a second
                if tick.tick_type == BOOK:
                    books.append(tick)
                elif tick.tick_type == BAR:
                    self._bars[(tick.symbol, tick.tick.bar.interval)] = tick
        if books or self.books:  # the batch is scanned once, here, not again for its books
            self.books.store(books, self.history.earliest_offset)
        self.wake_waiters()

    def wake_waiters(self) -> None:
        """Wake every :meth:`wait_beyond` now (new ticks, or shutdown)."""
        self._advanced.set()
        self._advanced = asyncio.Event()

    async def catch_up(self) -> None:
        """Return once this replica has read every tick stored so far (a shared backbone's
        replicas read the others' ticks a moment after they are stored; here: at once)."""

    async def wait_beyond(self, offset: int, max_wait: float) -> bool:
        """Wait until the head passes ``offset``; False when ``max_wait`` seconds pass first."""
        if self.history.head_offset > offset:
            return True
        event = self._advanced
        try:
            async with asyncio.timeout(max_wait):
                await event.wait()
        except TimeoutError:
            return self.history.head_offset > offset
        return True

    def snapshot(self, symbols: Iterable[str], types: frozenset[int]) -> list[StoredTick]:
        """The latest tick of each requested (symbol, type) pair, and of bars the latest of each
        interval, in offset order; books are not in it (see :meth:`book_bases`)."""
        wanted = set(symbols)
        latest = [
            tick
            for symbol in wanted
            for kind in types
            if kind in (TRADE, QUOTE) and (tick := self._latest.get((symbol, kind))) is not None
        ]
        if BAR in types:
            latest.extend(tick for (symbol, _), tick in self._bars.items() if symbol in wanted)
        return sorted(latest, key=lambda tick: tick.offset)

    def book_bases(self, symbols: Iterable[str], offset: int) -> list[StoredTick]:
        """Each symbol's whole book as of ``offset`` (a snapshot tick with the header of the
        last update up to it), in offset order; symbols without a complete book are left out."""
        bases = [
            StoredTick.of(tick, BOOK)
            for symbol in symbols
            if symbol in self.books and (tick := self.books.at(symbol, offset)) is not None
        ]
        return sorted(bases, key=lambda tick: tick.offset)

    def heartbeat(self) -> feed_pb2.Heartbeat:
        """A Heartbeat with the epoch, head and earliest offsets, stamped now."""
        beat = feed_pb2.Heartbeat(
            epoch=self.epoch,
            head_offset=self.history.head_offset,
            earliest_offset=self.history.earliest_offset,
        )
        beat.time.FromNanoseconds(self.clock_ns())
        return beat
