"""One SSE client's place in the stream: live on a shared source, after a resume splice.

Ordering guarantee: a client receives its ticks in strictly increasing offset order, each once,
so the id of the last event it saw is a complete resume cursor, for one symbol or many.

- Live: the client follows one source, the shared upstream of its symbol or the shared
  :class:`~edge_service.merge.SymbolMerge` of its symbols; in the steady state each dispatch's
  bytes, joined once for every client of the same types, go to the outbox as they are.
- Resume (a cursor or ``earliest``): the client first reads the feed's history through a private
  ``Subscribe(after=cursor)`` while the source's live ticks are held in a bounded buffer. Once the
  private stream has passed the point where the buffer began, the client switches to the shared
  stream, dropping buffered ticks it already has: no gap, no duplicate.

The queue, its bounds and the slow-consumer policy are the :class:`~edge_service.outbox.Outbox`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable

import grpc
from tickstream.v1 import feed_pb2, feed_pb2_grpc, tick_pb2

from .books import BookViews, depths_of
from .cursor import EARLIEST, Cursor, format_event_id
from .encoding import (
    BAR_KIND,
    QUOTE,
    EncodedTick,
    conflates,
    encode_control,
    encode_tick,
    snapshot_frame,
)
from .metrics import EdgeMetrics
from .outbox import Outbox
from .rate import RateGate
from .reader import Opened, Progress, Reset, SubscribeReader, Ticks
from .upstream import TickDispatch, TickSource

log = logging.getLogger(__name__)

BACKLOG_WAIT_S = 0.005
"""How often a catch-up that is ahead of its client looks again (see Outbox.backlogged)."""
KIND_TO_TYPE = {"trade": tick_pb2.TICK_TYPE_TRADE, "quote": tick_pb2.TICK_TYPE_QUOTE}


def tick_types(kinds: Iterable[str]) -> list[int]:
    """The feed's tick types for ``kinds`` (``book:<depth>`` is TICK_TYPE_BOOK, ``bar:...``
    TICK_TYPE_BAR), sorted."""
    types = {
        KIND_TO_TYPE.get(kind)
        or (tick_pb2.TICK_TYPE_BAR if kind.startswith(BAR_KIND) else tick_pb2.TICK_TYPE_BOOK)
        for kind in kinds
    }
    return sorted(types)


def catchup_request(
    symbols: list[str], kinds: Iterable[str], start: Cursor | str, snapshot: bool
) -> feed_pb2.SubscribeRequest:
    """A resuming client's private Subscribe: its symbols and types, after ``start``."""
    request = feed_pb2.SubscribeRequest(
        symbols=symbols, types=tick_types(kinds), snapshot=snapshot, progress_updates=True
    )
    if start == EARLIEST:
        request.earliest = True
    else:
        assert isinstance(start, Cursor)
        request.after.epoch, request.after.offset = start.epoch, start.offset
    return request


def queue_history(
    batch: feed_pb2.TickBatch, session: ClientSession, after_reset: bool, books: BookViews
) -> None:
    """A catch-up's history ticks after ``session``'s cursor, queued (history, not live: kept
    out of the delivery latency samples); book ticks are applied to ``books`` first, whatever
    their offset. Moves the cursor to the batch's head."""
    epoch, cursor, outbox, kinds = session.epoch, session.cursor, session.outbox, session.kinds
    assert epoch is not None
    for tick in batch.ticks:
        new = tick.offset > cursor or after_reset
        if tick.HasField("book"):
            events = books.take(tick, depths_of(session.kinds), epoch)
            for event in events if new else ():
                # After a reset, the book as of its point: a value (no id), since its offset
                # is before the reset's id (ids never go back).
                frame = event.frame if tick.offset > cursor else snapshot_frame(event)
                outbox.push(frame)
        elif new:
            encoded = encode_tick(tick, epoch)
            if encoded.kind in kinds:  # the feed sends every interval's bars: those asked for
                outbox.push(encoded.frame)
    session.cursor = max(cursor, batch.head_offset)


class ClientSession:
    """The state of one SSE stream; its source calls the ``on_*`` methods, the outbox holds
    what is to be written. ``symbols`` are validated, ``kinds`` a subset of {"trade", "quote",
    "book:<depth>"}."""

    __slots__ = (
        "_buffer",
        "_buffer_start",
        "_catchup_limit",
        "_catchup_task",
        "_closed",
        "_metrics",
        "_seen",
        "cursor",
        "epoch",
        "gate",
        "kinds",
        "live",
        "outbox",
        "snapshot_due",
        "source",
        "symbols",
    )

    def __init__(
        self,
        symbols: list[str],
        kinds: frozenset[str],
        *,
        outbox: Outbox,
        catchup_limit: int,
        metrics: EdgeMetrics,
    ) -> None:
        self.symbols = symbols
        self.kinds = kinds
        self.outbox = outbox
        self.source: TickSource | None = None
        self.epoch: str | None = None
        self.cursor = 0  # every tick of ours up to this offset (in self.epoch) was queued
        self.live = True  # False while a resume is catching up
        self.snapshot_due = False  # a snapshot to send before the source's first dispatch
        self.gate: RateGate | None = None  # with max_rate: holds live ticks between releases
        # While catching up: live ticks held from the source, and its watermark when holding began.
        self._buffer: deque[EncodedTick] | None = None
        self._buffer_start = 0
        self._seen = 0  # while catching up: the watermark of the last dispatch buffered
        self._catchup_limit = catchup_limit
        self._catchup_task: asyncio.Task[None] | None = None
        self._closed = False
        self._metrics = metrics

    # ----- start -------------------------------------------------------------------------

    def begin_live(
        self, source: TickSource, snapshot: bool, reset: tuple[str, str] | None = None
    ) -> None:
        """Start at the live edge of ``source`` (already listened to, same instant); ``reset``
        (reason, message) first sends a reset event, e.g. for an unusable Last-Event-ID."""
        self._follow(source)
        self.epoch, self.cursor = source.epoch, source.watermark
        if reset is not None:
            self._emit_reset(*reset, self.symbols)
        if snapshot:  # without ids (values, not positions); an unsettled merge's waits
            self.snapshot_due = not getattr(source, "settled", True)  # for its first dispatch
            if not self.snapshot_due:
                self._send_snapshot(source)

    def _send_snapshot(self, source: TickSource) -> None:
        if self.snapshot_due:  # the merge's state at its start, not after this dispatch
            ticks = source.snapshot_at_start(self.kinds)  # type: ignore[attr-defined]
        else:
            ticks = source.snapshot(self.kinds)
        self.snapshot_due = False
        for tick in ticks:
            self.outbox.push(snapshot_frame(tick))

    def begin_resume(
        self,
        source: TickSource,
        start: Cursor | str,
        snapshot: bool,
        stub: feed_pb2_grpc.FeedServiceStub,
    ) -> None:
        """Resume after ``start`` (a Cursor or ``earliest``) through a private catch-up stream."""
        self._follow(source)
        self._buffer, self._buffer_start = deque(), source.watermark
        self._seen = source.watermark
        self.live = False
        self._metrics.catchups.inc()
        self._catchup_task = asyncio.create_task(
            self._catch_up(stub, start, snapshot), name="catch-up"
        )

    def _follow(self, source: TickSource) -> None:
        self.source = source
        for frame in source.stale_frames():  # a client joining a stale symbol learns it first
            self.outbox.push(frame)

    # ----- output ------------------------------------------------------------------------

    def _push_tick(self, tick: EncodedTick) -> None:
        if self.gate is not None:
            self.gate.push(tick)
        else:
            self.push_now(tick)

    def release(self, ticks: list[EncodedTick]) -> None:
        """Queue ``ticks`` (a rate gate's release, in offset order)."""
        for tick in ticks:
            self.push_now(tick)

    def push_now(self, tick: EncodedTick) -> None:
        if not conflates(tick.kind):
            self.outbox.push(tick.frame, 1, tick.ingest_ns)
        else:  # quotes, books and open bars conflate, each (symbol, kind) apart
            key = tick.symbol if tick.kind == QUOTE else f"{tick.symbol} {tick.kind}"
            self.outbox.push_quote(key, tick.frame, tick.ingest_ns)

    def end(self, reason: str, message: str) -> None:
        """Finish the stream with a ``disconnect`` event after what is queued."""
        self.outbox.end(reason, message)

    def _emit_reset(self, reason: str, message: str, symbols: Iterable[str]) -> None:
        if self.gate is not None:
            self.gate.release_now()  # held ticks come before the reset that follows them
        self._metrics.resets.labels(reason).inc()
        payload = {
            "reason": reason,
            "message": message,
            "epoch": self.epoch,
            "symbols": sorted(symbols),
        }
        event_id = format_event_id(self.epoch, self.cursor) if self.epoch else None
        self.outbox.push(encode_control("reset", payload, event_id))

    # ----- from the source -------------------------------------------------------------------

    def on_ticks(self, source: TickSource, dispatch: TickDispatch) -> None:
        kinds = self.kinds
        if self._buffer is not None:
            self._seen = dispatch.watermark
            self._buffer.extend(t for t in dispatch.ticks if t.kind in kinds)
            if len(self._buffer) > self._catchup_limit:
                self._buffer.clear()
                self._buffer_start = dispatch.watermark
            return
        if dispatch.epoch != self.epoch:
            return
        if self.snapshot_due:
            self._send_snapshot(source)
        ticks = dispatch.ticks
        if (ticks and ticks[0].offset <= self.cursor) or self.outbox.behind or self.gate:
            # just after a resume splice, behind, or rate-capped: tick by tick
            cursor = self.cursor
            for tick in ticks:
                if tick.offset > cursor and tick.kind in kinds:
                    self._push_tick(tick)
        else:  # the steady state: bytes joined once per dispatch, shared by all clients
            frames, count = dispatch.frames(kinds)
            if count:
                self.outbox.push(frames, count, dispatch.ingest_ns)
        self.cursor = max(self.cursor, dispatch.watermark)

    def on_reset(self, source: TickSource, reason: str, message: str, symbols: list[str]) -> None:
        if self._buffer is not None:
            self._buffer.clear()
            self._buffer_start = self._seen = source.watermark
            return
        if source.epoch != self.epoch:
            # The feed restarted: the client's state is stale; go on from the new head.
            self.epoch, self.cursor = source.epoch, source.watermark
            self._emit_reset(reason, message, self.symbols)
        elif reason != "epoch_changed":
            self._emit_reset(reason, message, symbols)

    def on_status(self, source: TickSource, frame: bytes) -> None:
        """``frame``, a symbol's ``status`` event (no ``id``), queued ahead of later ticks."""
        self.outbox.push(frame)

    def on_closed(self, source: TickSource, reason: str) -> None:
        self.end("symbol_unavailable", reason)

    # ----- catch-up ----------------------------------------------------------------------

    async def _catch_up(
        self, stub: feed_pb2_grpc.FeedServiceStub, start: Cursor | str, snapshot: bool
    ) -> None:
        if isinstance(start, Cursor):
            self.epoch, self.cursor = start.epoch, start.offset
        call = stub.Subscribe(catchup_request(self.symbols, self.kinds, start, snapshot))
        reader, books = SubscribeReader(), BookViews()
        after_reset = False
        try:
            async for response in call:
                event = reader.read(response)
                if isinstance(event, Opened):
                    self.epoch = self.epoch or event.epoch
                    continue
                if isinstance(event, Progress):
                    if event.epoch == self.epoch and not after_reset:
                        self.cursor = max(self.cursor, event.head)
                elif isinstance(event, Reset):
                    self.epoch, self.cursor = event.epoch, event.head
                    self._emit_reset(event.reason, event.message, self.symbols)
                    after_reset = True
                    continue
                elif isinstance(event, Ticks):
                    queue_history(event.batch, self, after_reset, books)
                    # At the client's pace; polled: an Event in every outbox would cost all
                    # streams memory for the few catching up.
                    while self.outbox.backlogged and not self.outbox.ended:  # noqa: ASYNC110
                        await asyncio.sleep(BACKLOG_WAIT_S)
                else:
                    continue  # symbol states reach the client through the shared source
                after_reset = False
                if self._try_switch():
                    return
        except grpc.aio.AioRpcError as error:
            log.info("catch-up stream failed: %s %s", error.code().name, error.details())
            self.end("feed_unavailable", f"catch-up: {error.code().name}: {error.details()}")
        finally:
            call.cancel()

    def _try_switch(self) -> bool:
        """Join the shared source once the private stream has reached its buffer."""
        source = self.source
        assert source is not None and self._buffer is not None
        if source.epoch != self.epoch or self._buffer_start > self.cursor:
            return False
        buffered, self._buffer = self._buffer, None
        self.live = True
        for tick in buffered:
            if tick.offset > self.cursor:
                self._push_tick(tick)
        # Not source.watermark: a dispatch still on its way (fanout) holds ticks beyond _seen.
        self.cursor = max(self.cursor, self._seen)
        return True

    # ----- teardown ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop: no more ticks are queued, the catch-up is cancelled. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.outbox.ended = True
        if self.gate is not None:
            self.gate.close()
        if self._catchup_task is not None:
            self._catchup_task.cancel()
