"""One SSE client: its bounded queue, the merge of several symbols, and the resume splice.

Ordering guarantee: a client receives its ticks in strictly increasing offset order, each once,
so the id of the last event it saw is a complete resume cursor, for one symbol or many.

- One symbol: the shared upstream's ticks go straight to the queue.
- Several symbols: ticks wait per symbol until every symbol's upstream has passed their offset
  (its watermark), then are released in offset order.
- Resume (a cursor or ``earliest``): the client first reads the feed's history through a private
  ``Subscribe(after=cursor)`` while the shared upstreams' live ticks are held in a bounded buffer.
  Once the private stream has passed the point where the buffer began, the client switches to the
  shared stream, dropping buffered ticks it already has: no gap, no duplicate.

Slow consumer policy (each client's queue is bounded in events and bytes):
- past half the event limit the client is "behind": a new quote replaces the quote of the same
  symbol still queued (latest wins; the quote ``sequence`` then jumps); trades are never dropped;
- past the event or the byte limit it is disconnected with a final ``disconnect`` event (reason
  ``slow_consumer``) and resumes with Last-Event-ID like any reconnect;
- once its queue is written out it is no longer behind.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import grpc
from tickstream.v1 import feed_pb2, feed_pb2_grpc, tick_pb2

from .cursor import EARLIEST, Cursor, format_event_id
from .encoding import QUOTE, EncodedTick, encode_control, encode_tick, snapshot_frame
from .metrics import EdgeMetrics
from .upstream import SymbolUpstream, TickDispatch

log = logging.getLogger(__name__)

WRITE_LIMIT = 64 * 1024  # bytes per write, about
LATENCY_SAMPLE_EVERY = 8  # chunks per delivery-latency observation, per stream
KIND_TO_TYPE = {"trade": tick_pb2.TICK_TYPE_TRADE, "quote": tick_pb2.TICK_TYPE_QUOTE}


class _QuoteSlot:
    """A queued quote that a newer quote of the same symbol may still replace."""

    __slots__ = ("frame", "ingest_ns")

    def __init__(self, frame: bytes, ingest_ns: int) -> None:
        self.frame: bytes | None = frame
        self.ingest_ns = ingest_ns


@dataclass(slots=True)
class _SymbolState:
    epoch: str | None
    watermark: int
    pending: deque[EncodedTick] = field(default_factory=deque)
    # While catching up: live ticks held from the shared stream, and where holding began.
    buffer: deque[EncodedTick] = field(default_factory=deque)
    buffer_start: int = 0
    # Where the upstream's stream restarted after its last reset.
    reset_head: int = 0
    # Ticks of this symbol at or below this offset are not ours (already past when we joined).
    start: int = 0


class ClientSession:
    """The state of one SSE stream; upstreams call its ``on_*`` methods, the response task
    awaits :meth:`next_chunk`.

    ``symbols`` are validated, ``kinds`` is a subset of {"trade", "quote"}.
    """

    def __init__(
        self,
        symbols: list[str],
        kinds: frozenset[str],
        *,
        queue_limit: int,
        queue_bytes_limit: int,
        catchup_limit: int,
        metrics: EdgeMetrics,
        on_close: Callable[[ClientSession], None],
    ) -> None:
        self.symbols = symbols
        self.kinds = kinds
        self.epoch: str | None = None
        self.cursor = 0  # every tick of ours up to this offset (in self.epoch) was queued
        self._states: dict[str, _SymbolState] = {}
        # (frames, events, ingest ns of the oldest tick or 0) or a conflatable quote
        self._queue: deque[tuple[bytes, int, int] | _QuoteSlot] = deque()
        self._queued = 0  # events in _queue (an entry may hold several)
        self._queued_bytes = 0
        self._queue_limit = queue_limit
        self._queue_bytes_limit = queue_bytes_limit
        # symbol -> its newest queued quote, while the client is behind (None: not behind)
        self._conflating: dict[str, _QuoteSlot] | None = None
        self._catchup_limit = catchup_limit
        self._wakeup = asyncio.Event()
        self._final: bytes | None = None
        self._ended = False
        self._closed = False
        self._catching_up = False
        self._catchup_task: asyncio.Task[None] | None = None
        # A feed restart seen by some of our upstreams: (new epoch, reason, message).
        self._epoch_change: tuple[str, str, str] | None = None
        self._metrics = metrics
        self._on_close = on_close
        self._wrote_since_heartbeat = False
        self._chunks = 0
        self._chunk_ingest_ns = 0  # oldest tick in the last chunk (0: no tick in it)

    # ----- start -------------------------------------------------------------------------

    def begin_live(
        self,
        upstreams: list[SymbolUpstream],
        snapshot: bool,
        reset: tuple[str, str] | None = None,
    ) -> None:
        """Start at the live edge of ``upstreams`` (already attached, same instant); ``reset``
        (reason, message) first sends a reset event, e.g. for an unusable Last-Event-ID."""
        self._init_states(upstreams)
        self.epoch = upstreams[0].epoch  # the pool hands out upstreams of one epoch
        # Each symbol starts after its own upstream's watermark; the stream is complete through
        # the lowest of them, which makes that a safe cursor (resuming there repeats nothing).
        for upstream in upstreams:
            self._states[upstream.symbol].start = upstream.watermark
        self.cursor = min(u.watermark for u in upstreams)
        if reset is not None:
            self._emit_reset(*reset, self.symbols)
        if snapshot:  # sent without ids: they are values, not positions in the stream
            latest = [t for u in upstreams for t in u.snapshot(self.kinds)]
            for tick in sorted(latest, key=lambda t: t.offset):
                self._push(snapshot_frame(tick))

    def begin_resume(
        self,
        upstreams: list[SymbolUpstream],
        start: Cursor | str,
        snapshot: bool,
        stub: feed_pb2_grpc.FeedServiceStub,
    ) -> None:
        """Resume after ``start`` (a Cursor or ``earliest``) through a private catch-up stream."""
        self._init_states(upstreams)
        for upstream in upstreams:
            state = self._states[upstream.symbol]
            state.buffer_start = upstream.watermark
        self._catching_up = True
        self._metrics.catchups.inc()
        self._catchup_task = asyncio.create_task(
            self._catch_up(stub, start, snapshot), name="catch-up"
        )

    def _init_states(self, upstreams: list[SymbolUpstream]) -> None:
        self._states = {u.symbol: _SymbolState(u.epoch, u.watermark) for u in upstreams}
        for upstream in upstreams:  # a client joining a stale symbol learns it first
            if upstream.stale_frame is not None:
                self._push(upstream.stale_frame)

    # ----- output ------------------------------------------------------------------------

    async def next_chunk(self) -> bytes | None:
        """Everything queued, as one write (one event at light load, many under load);
        None once the stream is over (after its final event)."""
        while not self._queue:
            if self._ended:
                if self._final is not None:
                    final, self._final = self._final, None
                    return final
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        queue = self._queue
        if len(queue) == 1 and isinstance(queue[0], tuple):
            chunk, count, self._chunk_ingest_ns = queue.popleft()
        else:
            # At most about WRITE_LIMIT bytes per write, so one write to a slow reader never
            # outlasts the send timeout; the rest stays queued (and conflatable).
            parts: list[bytes] = []
            size = count = ingest_ns = 0
            while queue and size < WRITE_LIMIT:
                entry = queue.popleft()
                if isinstance(entry, tuple):
                    parts.append(entry[0])
                    size += len(entry[0])
                    count += entry[1]
                    ingest_ns = ingest_ns or entry[2]
                elif entry.frame is not None:
                    parts.append(entry.frame)
                    size += len(entry.frame)
                    count += 1
                    ingest_ns = ingest_ns or entry.ingest_ns
            chunk = b"".join(parts)
            self._chunk_ingest_ns = ingest_ns
        self._queued -= count
        self._queued_bytes -= len(chunk)
        self._wrote_since_heartbeat = True
        if not queue:
            self._conflating = None  # caught up with everything queued
        self._metrics.events_sent.inc(count)
        return chunk

    def sent(self) -> None:
        """The last chunk was handed to the server: sample its delivery latency (feed ingest
        to edge send) once every ``LATENCY_SAMPLE_EVERY`` chunks."""
        self._chunks += 1
        if self._chunk_ingest_ns and not self._chunks % LATENCY_SAMPLE_EVERY:
            self._metrics.delivery_latency.observe((time.time_ns() - self._chunk_ingest_ns) / 1e9)

    @property
    def queued(self) -> int:
        """Events queued and not yet written."""
        return self._queued

    def _push(self, frames: bytes, count: int = 1, ingest_ns: int = 0) -> None:
        """Queue ``count`` events' bytes (``ingest_ns``: of the oldest tick among them, 0 for
        none). Past half the event limit, quotes start to conflate; past the event or byte limit
        the client is disconnected as a slow consumer."""
        if self._ended:
            return
        self._queue.append((frames, count, ingest_ns))
        self._account(count, len(frames))

    def _push_tick(self, tick: EncodedTick) -> None:
        """Queue one tick; while conflating, a quote replaces its symbol's queued quote (the
        older one is dropped, the newer appended, so offsets stay in order)."""
        if self._conflating is None or tick.kind != QUOTE or self._ended:
            self._push(tick.frame, 1, tick.ingest_ns)
            return
        slot = self._conflating.get(tick.symbol)
        if slot is not None and slot.frame is not None:
            self._queued -= 1
            self._queued_bytes -= len(slot.frame)
            slot.frame = None
            self._metrics.conflated.inc()
        slot = self._conflating[tick.symbol] = _QuoteSlot(tick.frame, tick.ingest_ns)
        self._queue.append(slot)
        self._account(1, len(tick.frame))

    def _account(self, count: int, size: int) -> None:
        self._queued += count
        self._queued_bytes += size
        self._wakeup.set()
        if self._queued > self._queue_limit or self._queued_bytes > self._queue_bytes_limit:
            self._queue.clear()
            self._queued = self._queued_bytes = 0
            self.end(
                "slow_consumer",
                f"more than {self._queue_limit} events or {self._queue_bytes_limit} bytes "
                "queued; reconnect with Last-Event-ID",
            )
        elif self._conflating is None and self._queued > self._queue_limit // 2:
            self._conflating = {}

    def heartbeat(self, frame: bytes) -> None:
        """Queue the comment ``frame`` unless the stream carried anything since the last call:
        a stream that is busy needs no keep-alive. Called for every session at once, every
        ping interval, by the app's one heartbeat task."""
        if not self._wrote_since_heartbeat and not self._queue:
            self._push(frame, 0)
        self._wrote_since_heartbeat = False

    def end(self, reason: str, message: str, retry_ms: int | None = None) -> None:
        """Finish the stream with a ``disconnect`` event after what is queued; ``retry_ms``
        adds a ``retry:`` field telling the client when to reconnect."""
        if self._ended:
            return
        if retry_ms is not None:
            # Shutting down: the backlog would delay the farewell past the grace period; the
            # client resumes from the last event it did get.
            self._queue.clear()
            self._queued = self._queued_bytes = 0
        self._metrics.disconnects.labels(reason).inc()
        self._final = encode_control(
            "disconnect", {"reason": reason, "message": message}, retry_ms=retry_ms
        )
        self._ended = True
        self._wakeup.set()

    def _emit_reset(self, reason: str, message: str, symbols: Iterable[str]) -> None:
        self._metrics.resets.labels(reason).inc()
        payload = {
            "reason": reason,
            "message": message,
            "epoch": self.epoch,
            "symbols": sorted(symbols),
        }
        event_id = format_event_id(self.epoch, self.cursor) if self.epoch else None
        self._push(encode_control("reset", payload, event_id))

    # ----- upstream callbacks --------------------------------------------------------------

    def on_ticks(self, upstream: SymbolUpstream, dispatch: TickDispatch) -> None:
        ticks = dispatch.ticks
        state = self._states[upstream.symbol]
        state.epoch, state.watermark = upstream.epoch, upstream.watermark
        kinds = self.kinds
        if self._catching_up:
            state.buffer.extend(t for t in ticks if t.kind in kinds)
            if len(state.buffer) > self._catchup_limit:
                state.buffer.clear()
                state.buffer_start = upstream.watermark
            return
        if upstream.epoch != self.epoch:
            if self._epoch_change is not None and upstream.epoch == self._epoch_change[0]:
                state.pending.extend(t for t in ticks if t.kind in kinds)
            return
        if len(self._states) == 1:
            if (ticks and ticks[0].offset <= self.cursor) or self._conflating is not None:
                # just after a resume splice, or behind: tick by tick
                for tick in ticks:
                    if tick.offset > self.cursor and tick.kind in kinds:
                        self._push_tick(tick)
            else:  # the steady state: bytes joined once per dispatch, shared by all clients
                frames, count = dispatch.frames(kinds)
                if count:
                    self._push(frames, count, dispatch.ingest_ns)
            self.cursor = max(self.cursor, upstream.watermark)
            return
        state.pending.extend(t for t in ticks if t.offset > state.start and t.kind in kinds)
        self._release()

    def on_reset(self, upstream: SymbolUpstream, reason: str, message: str) -> None:
        state = self._states[upstream.symbol]
        state.epoch, state.watermark = upstream.epoch, upstream.watermark
        state.pending.clear()
        if self._catching_up:
            state.buffer.clear()
            state.buffer_start = upstream.watermark
            return
        state.reset_head = upstream.watermark
        if upstream.epoch != self.epoch:
            # The feed restarted. Ticks held from the old epoch cannot be ordered against the
            # new one: drop them; the reset tells the client its state is stale.
            if self._epoch_change is None:
                for other in self._states.values():
                    other.pending.clear()
            assert upstream.epoch is not None
            self._epoch_change = (upstream.epoch, reason, message)
            self._finish_epoch_change()
        elif reason != "epoch_changed":
            self._emit_reset(reason, message, [upstream.symbol])
        self._release()

    def _finish_epoch_change(self) -> None:
        """Once every symbol's upstream is in the new epoch, resume after the highest point
        any of them restarted at, so the reset's id is a complete cursor for all symbols."""
        assert self._epoch_change is not None
        epoch, reason, message = self._epoch_change
        states = self._states.values()
        if any(s.epoch != epoch for s in states):
            return
        self._epoch_change = None
        self.epoch = epoch
        self.cursor = max(s.reset_head for s in states)
        for state in states:
            state.pending = deque(t for t in state.pending if t.offset > self.cursor)
            state.start = self.cursor
        self._emit_reset(reason, message, self._states)

    def on_status(self, upstream: SymbolUpstream, frame: bytes) -> None:
        """The symbol turned stale or live: ``frame`` is its ``status`` event (no ``id``: a
        state, not a position), queued at once, ahead of any tick that follows."""
        self._push(frame)

    def on_closed(self, upstream: SymbolUpstream, reason: str) -> None:
        self.end("symbol_unavailable", f"{upstream.symbol}: {reason}")

    def _release(self) -> None:
        """Queue, in offset order, every pending tick that no symbol can still precede."""
        if len(self._states) == 1:
            state = next(iter(self._states.values()))
            while state.pending:
                self._push_tick(state.pending.popleft())
            return
        if any(s.epoch != self.epoch for s in self._states.values()):
            return
        limit = min(s.watermark for s in self._states.values())
        runs = []
        for state in self._states.values():
            run = []
            pending = state.pending
            while pending and pending[0].offset <= limit:
                run.append(pending.popleft())
            if run:
                runs.append(run)
        if len(runs) == 1:
            for tick in runs[0]:
                self._push_tick(tick)
        elif runs:
            for tick in heapq.merge(*runs, key=lambda t: t.offset):
                self._push_tick(tick)
        self.cursor = max(self.cursor, limit)

    # ----- catch-up ----------------------------------------------------------------------

    async def _catch_up(
        self, stub: feed_pb2_grpc.FeedServiceStub, start: Cursor | str, snapshot: bool
    ) -> None:
        request = feed_pb2.SubscribeRequest(
            symbols=self.symbols,
            types=[KIND_TO_TYPE[k] for k in sorted(self.kinds)],
            snapshot=snapshot,
            progress_updates=True,
        )
        if start == EARLIEST:
            request.earliest = True
        else:
            assert isinstance(start, Cursor)
            request.after.epoch, request.after.offset = start.epoch, start.offset
            self.epoch, self.cursor = start.epoch, start.offset
        call = stub.Subscribe(request)
        after_reset = False
        first = True
        try:
            async for response in call:
                kind = response.WhichOneof("event")
                if kind == "heartbeat":
                    # The first Heartbeat names the epoch; later ones are watermarks.
                    beat = response.heartbeat
                    if first:
                        first = False
                        if self.epoch is None:
                            self.epoch = beat.epoch
                        continue
                    if beat.epoch == self.epoch and not after_reset:
                        self.cursor = max(self.cursor, beat.head_offset)
                elif kind == "reset":
                    reset = response.reset
                    self.epoch, self.cursor = reset.epoch, reset.head_offset
                    name = feed_pb2.ResetReason.Name(reset.reason)
                    self._emit_reset(
                        name.removeprefix("RESET_REASON_").lower(), reset.message, self.symbols
                    )
                    after_reset = True
                    continue
                elif kind == "status":
                    continue  # symbol states reach the client through the shared upstreams
                elif kind == "ticks":
                    assert self.epoch is not None
                    for tick in response.ticks.ticks:
                        if tick.offset > self.cursor or after_reset:
                            # history, not live: kept out of the delivery-latency samples
                            self._push(encode_tick(tick, self.epoch).frame)
                    self.cursor = max(self.cursor, response.ticks.head_offset)
                after_reset = False
                if self._try_switch():
                    return
        except grpc.aio.AioRpcError as error:
            log.info("catch-up stream failed: %s %s", error.code().name, error.details())
            self.end("feed_unavailable", "the feed went away during catch-up; reconnect")
        finally:
            call.cancel()

    def _try_switch(self) -> bool:
        """Join the shared streams once the private stream has reached their buffers."""
        states = self._states.values()
        if any(s.epoch != self.epoch or s.buffer_start > self.cursor for s in states):
            return False
        for state in states:
            state.pending = deque(t for t in state.buffer if t.offset > self.cursor)
            state.buffer = deque()
            state.start = self.cursor
        self._catching_up = False
        if len(self._states) == 1:
            state = next(iter(states))
            self._release()
            self.cursor = max(self.cursor, state.watermark)
        else:
            self._release()
        return True

    # ----- teardown ----------------------------------------------------------------------

    def close(self) -> None:
        """Free everything: detach from upstreams, cancel the catch-up. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._ended = True
        if self._catchup_task is not None:
            self._catchup_task.cancel()
        self._on_close(self)
