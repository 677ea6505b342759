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

The queue, its bounds and the slow-consumer policy are the :class:`~edge_service.outbox.Outbox`.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc
from tickstream.v1 import feed_pb2, feed_pb2_grpc, tick_pb2

from .cursor import EARLIEST, Cursor, format_event_id
from .encoding import QUOTE, EncodedTick, encode_control, encode_tick, snapshot_frame
from .metrics import EdgeMetrics
from .outbox import Outbox
from .upstream import SymbolUpstream, TickDispatch

log = logging.getLogger(__name__)

KIND_TO_TYPE = {"trade": tick_pb2.TICK_TYPE_TRADE, "quote": tick_pb2.TICK_TYPE_QUOTE}


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
        outbox: Outbox,
        catchup_limit: int,
        metrics: EdgeMetrics,
    ) -> None:
        self.symbols = symbols
        self.kinds = kinds
        self.outbox = outbox
        self.epoch: str | None = None
        self.cursor = 0  # every tick of ours up to this offset (in self.epoch) was queued
        self._states: dict[str, _SymbolState] = {}
        self._catchup_limit = catchup_limit
        self._closed = False
        self._catching_up = False
        self._catchup_task: asyncio.Task[None] | None = None
        # A feed restart seen by some of our upstreams: (new epoch, reason, message).
        self._epoch_change: tuple[str, str, str] | None = None
        self._metrics = metrics

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

    def _push(self, frames: bytes) -> None:
        self.outbox.push(frames)

    def _push_tick(self, tick: EncodedTick) -> None:
        if tick.kind == QUOTE:
            self.outbox.push_quote(tick.symbol, tick.frame, tick.ingest_ns)
        else:
            self.outbox.push(tick.frame, 1, tick.ingest_ns)

    def end(self, reason: str, message: str) -> None:
        """Finish the stream with a ``disconnect`` event after what is queued."""
        self.outbox.end(reason, message)

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
            if (ticks and ticks[0].offset <= self.cursor) or self.outbox.behind:
                # just after a resume splice, or behind: tick by tick
                for tick in ticks:
                    if tick.offset > self.cursor and tick.kind in kinds:
                        self._push_tick(tick)
            else:  # the steady state: bytes joined once per dispatch, shared by all clients
                frames, count = dispatch.frames(kinds)
                if count:
                    self.outbox.push(frames, count, dispatch.ingest_ns)
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
        """Stop: no more ticks are queued, the catch-up is cancelled. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.outbox.ended = True
        if self._catchup_task is not None:
            self._catchup_task.cancel()
