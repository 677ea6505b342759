"""The fan-out: every client of one source (a symbol's upstream or a merge) that asked for the same
tick types, written in one pass per dispatch.

A dispatch's bytes for those types are joined and framed as one HTTP/1.1 chunk once; then each
client in the steady state (live, caught up, nothing queued, socket writable) gets that chunk with
one ``transport.write`` and its cursor moved: no per-client queueing, no per-client callback.
Any other client (resuming, behind, with bytes queued, or paused) goes through its session and
outbox as before, so the ordering and slow-consumer rules stay where they are.

Why this exists: per client and dispatch, the session-and-outbox path costs about 5-7 us of
Python on this 2-core machine on top of the kernel's write; the steady pass costs about 1 us
(figures in bench/README.md, "Edge write path").
"""

from __future__ import annotations

import asyncio
from typing import Any

from .books import depths_of
from .delivery import Flusher, chunk_frame
from .session import ClientSession
from .upstream import TickDispatch


class FanOut:
    """The clients of ``source`` with types ``kinds``; the source's one listener for them.

    Dispatches are written at the end of the event loop's turn, all that arrived in it together:
    under load one pass carries many dispatches (one write per client, not one per dispatch),
    and a pass never waits for anything but the dispatches already in hand.
    """

    __slots__ = ("_flusher", "_pending", "kinds", "members", "source")

    def __init__(self, source: Any, kinds: frozenset[str], flusher: Flusher) -> None:
        self.source = source
        self.kinds = kinds
        self.members: set[ClientSession] = set()
        self._flusher = flusher
        self._pending: list[TickDispatch] = []

    def on_ticks(self, source: Any, dispatch: TickDispatch) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.write)
        self._pending.append(dispatch)

    def write(self) -> None:
        """The pass: every pending dispatch to every member, in order."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        kinds = self.kinds
        parts = [dispatch.frames(kinds) for dispatch in pending]
        count = sum(n for _, n in parts)
        framed = chunk_frame(b"".join(f for f, _ in parts)) if count else b""
        first = next((d.ticks[0].offset for d in pending if d.ticks), None)
        last = pending[-1]
        writes = 0
        for session in list(self.members):
            outbox = session.outbox
            sink = outbox.sink
            if (
                sink is not None
                and not outbox.queued_bytes
                and not outbox.ended
                and session.live
                and session.gate is None
                and not session.snapshot_due
                and session.epoch == last.epoch
                and (first is None or session.cursor < first)
                and sink.writable()
            ):
                if count:
                    sink.write_framed(framed)
                    outbox.active = True
                    writes += 1
                # Never back: a resumed client's catch-up may have run ahead of the upstream,
                # and a cursor set back would let the upstream's next ticks out a second time.
                session.cursor = max(session.cursor, last.watermark)
            else:
                for dispatch in pending:
                    session.on_ticks(self.source, dispatch)
        self._flusher.count(writes, writes * count, pending[0].ingest_ns)

    def on_reset(self, source: Any, reason: str, message: str, symbols: list[str]) -> None:
        self.write()  # ticks before the reset go first
        for session in list(self.members):
            session.on_reset(source, reason, message, symbols)

    def on_status(self, source: Any, frame: bytes) -> None:
        self.write()
        for session in list(self.members):
            session.on_status(source, frame)

    def on_closed(self, source: Any, reason: str) -> None:
        self.write()
        for session in list(self.members):
            session.on_closed(source, reason)


def _upstreams(source: Any) -> list[Any]:
    """The symbol upstreams behind ``source`` (a merge's, or the upstream itself)."""
    return list(getattr(source, "upstreams", [source]))


def join(source: Any, session: ClientSession, flusher: Flusher) -> FanOut:
    """Add ``session`` to the fan-out of ``source`` for its types, made and listening if new (a
    new one asks the upstreams for book events at its depth)."""
    fan_outs: dict[frozenset[str], FanOut] = source.fan_outs
    fan_out = fan_outs.get(session.kinds)
    if fan_out is None:
        fan_out = fan_outs[session.kinds] = FanOut(source, session.kinds, flusher)
        source.listeners.add(fan_out)
        for depth in depths_of(session.kinds):
            for upstream in _upstreams(source):
                upstream.want_depth(depth)
    fan_out.members.add(session)
    return fan_out


def leave(source: Any, session: ClientSession) -> bool:
    """Remove ``session``; True when ``source`` has no listener left."""
    fan_out = source.fan_outs.get(session.kinds)
    if fan_out is not None:
        fan_out.members.discard(session)
        if not fan_out.members:
            del source.fan_outs[session.kinds]
            source.listeners.discard(fan_out)
            for depth in depths_of(session.kinds):
                for upstream in _upstreams(source):
                    upstream.drop_depth(depth)
    return not source.listeners
