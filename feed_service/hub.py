"""The hub: numbers ticks, keeps the history and the latest trade and quote per symbol."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable, Sequence

from tickstream.v1 import feed_pb2, ingest_pb2, tick_pb2

from .history import TickHistory
from .wire import StoredTick


def tick_type_of(tick: tick_pb2.Tick) -> int:
    """The ``TickType`` value of a tick's body (TICK_TYPE_TRADE or TICK_TYPE_QUOTE)."""
    return tick_pb2.TICK_TYPE_TRADE if tick.HasField("trade") else tick_pb2.TICK_TYPE_QUOTE


def new_epoch() -> str:
    """A fresh random epoch id (16 hex digits): never derived from the seed or the data."""
    return uuid.uuid4().hex[:16]


class TickHub:
    """In-process hub: the single writer of sequence numbers and offsets.

    ``publish`` assigns each tick its per-(symbol, type) ``sequence`` (from 1, contiguous) and
    the next feed-wide ``offset``, stamps ``ingest_time``, appends it to the history and wakes
    waiting subscribers. Subscribers read the history by offset, so a slow one costs no memory.
    """

    def __init__(self, history_size: int, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.epoch = new_epoch()
        self.history: TickHistory[StoredTick] = TickHistory(history_size)
        self.clock_ns = clock_ns
        self._symbols: dict[str, feed_pb2.SymbolInfo] = {}
        self._sequences: dict[tuple[str, int], int] = {}
        self._latest: dict[tuple[str, int], tick_pb2.Tick] = {}
        self._advanced = asyncio.Event()
        self.ready = False

    @property
    def head_offset(self) -> int:
        return self.history.head_offset

    def add_symbols(self, infos: Iterable[feed_pb2.SymbolInfo]) -> None:
        """Declare symbols the feed serves (a source's metadata), replacing earlier entries."""
        for info in infos:
            self._symbols[info.symbol] = info

    def symbols(self) -> list[feed_pb2.SymbolInfo]:
        """Metadata of every declared symbol, sorted by symbol."""
        return [self._symbols[name] for name in sorted(self._symbols)]

    def knows(self, symbol: str) -> bool:
        return symbol in self._symbols

    @property
    def symbol_count(self) -> int:
        return len(self._symbols)

    def publish(self, drafts: Sequence[ingest_pb2.TickDraft], ingest_ns: int | None = None) -> int:
        """Number and store validated ``drafts`` in order; returns the new head offset.

        ``ingest_ns`` stamps every tick (default: now); a draft without ``event_time`` gets it
        as its event time too. Callers validate first (:class:`feed_service.ingest.Ingestor`).
        Raises KeyError for a symbol that was not declared with :meth:`add_symbols`.
        """
        start = offset = self.history.head_offset
        if ingest_ns is None:
            ingest_ns = self.clock_ns()
        sequences, latest, append = self._sequences, self._latest, self.history.append
        for draft in drafts:
            if draft.symbol not in self._symbols:
                raise KeyError(draft.symbol)
            is_trade = draft.HasField("trade")
            kind = tick_pb2.TICK_TYPE_TRADE if is_trade else tick_pb2.TICK_TYPE_QUOTE
            key = (draft.symbol, kind)
            sequence = sequences.get(key, 0) + 1
            sequences[key] = sequence
            offset += 1
            tick = tick_pb2.Tick(symbol=draft.symbol, sequence=sequence, offset=offset)
            if is_trade:
                tick.trade.CopyFrom(draft.trade)
            else:
                tick.quote.CopyFrom(draft.quote)
            if draft.HasField("event_time"):
                tick.event_time.CopyFrom(draft.event_time)
            else:
                tick.event_time.FromNanoseconds(ingest_ns)
            tick.ingest_time.FromNanoseconds(ingest_ns)
            append(StoredTick.of(tick, kind))
            latest[key] = tick
        if offset != start:
            self.wake_waiters()
        return offset

    def wake_waiters(self) -> None:
        """Wake every :meth:`wait_beyond` now (new ticks, or shutdown)."""
        self._advanced.set()
        self._advanced = asyncio.Event()

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

    def snapshot(self, symbols: Iterable[str], types: frozenset[int]) -> list[tick_pb2.Tick]:
        """The latest tick of each requested (symbol, type) pair, in offset order."""
        latest = [
            tick
            for symbol in symbols
            for kind in types
            if (tick := self._latest.get((symbol, kind))) is not None
        ]
        return sorted(latest, key=lambda tick: tick.offset)

    def heartbeat(self) -> feed_pb2.Heartbeat:
        """A Heartbeat with the epoch, head and earliest offsets, stamped now."""
        beat = feed_pb2.Heartbeat(
            epoch=self.epoch,
            head_offset=self.history.head_offset,
            earliest_offset=self.history.earliest_offset,
        )
        beat.time.FromNanoseconds(self.clock_ns())
        return beat
