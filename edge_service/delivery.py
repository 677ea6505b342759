"""The fan-out's write path: one pass writes every client that has bytes queued, straight to its
socket, with no task woken per client.

An upstream's dispatch queues bytes into each client's :class:`~edge_service.outbox.Outbox`; the
first bytes mark the outbox ready, and one callback per turn of the event loop (:class:`Flusher`)
writes each ready outbox to its connection: one ``write`` per client per pass. A client whose
socket is not writable (its transport is paused) leaves the pass: its connection's own task
waits for the drain and writes the rest, so one slow reader never delays the others.

Why not the ASGI ``send`` (sse-starlette's ``EventSourceResponse``) on this path: each send went
through a per-send ``anyio.move_on_after``, Starlette's middleware wrappers and uvicorn's
``send`` and woke one task per client per dispatch: about 50 us of edge CPU per client write on
this 2-core machine (bench profile, 2026-11-30), where a bare loopback ``write`` costs 5-15 us.
Here a write costs the chunk framing and ``transport.write`` (figures in bench/README.md).
The connection comes from uvicorn's HTTP/1.1 cycle (``transport``, ``flow``, ``message_event``,
``disconnected``); a server without them gets :class:`AsgiConnection`, correct but slower.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .metrics import EdgeMetrics
from .outbox import Outbox

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

LATENCY_SAMPLE_EVERY = 8  # writes per delivery-latency observation


def chunk_frame(chunk: bytes) -> bytes:
    """``chunk`` as one HTTP/1.1 chunk (RFC 9112 section 7.1): size in hex, CRLF, data, CRLF."""
    return b"%x\r\n%b\r\n" % (len(chunk), chunk)


class Flusher:
    """Collects ready outboxes and writes them all in one callback per loop turn."""

    def __init__(self, metrics: EdgeMetrics) -> None:
        self._metrics = metrics
        self._ready: list[Outbox] = []
        self._scheduled = False
        self._writes = 0

    def mark(self, outbox: Outbox) -> None:
        """``outbox`` has bytes to write (its ``on_ready``); written in this turn's pass."""
        self._ready.append(outbox)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._pass)

    def _pass(self) -> None:
        self._scheduled = False
        ready, self._ready = self._ready, []
        writes = events = 0
        first_ns = 0
        for outbox in ready:
            if outbox.scheduled:  # not yet flushed by its own task
                done, count, ingest_ns = outbox.flush()
                writes += done
                events += count
                first_ns = first_ns or ingest_ns
        self.count(writes, events, first_ns)

    def count(self, writes: int, events: int, ingest_ns: int = 0) -> None:
        """Account ``writes`` client writes carrying ``events`` events; one write in
        LATENCY_SAMPLE_EVERY samples the delivery latency of ``ingest_ns`` (0: no tick)."""
        if not writes:
            return
        metrics = self._metrics
        metrics.client_writes.inc(writes)
        metrics.events_sent.inc(events)
        before, self._writes = self._writes, self._writes + writes
        if ingest_ns and before // LATENCY_SAMPLE_EVERY != self._writes // LATENCY_SAMPLE_EVERY:
            metrics.delivery_latency.observe((time.time_ns() - ingest_ns) / 1e9)


class DirectConnection:
    """An SSE response body written straight to uvicorn's transport in HTTP/1.1 chunks."""

    __slots__ = ("_cycle", "_flow", "_transport", "paused_since")

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle
        self._transport: asyncio.Transport = cycle.transport
        self._flow = cycle.flow
        self.paused_since: float | None = None  # loop time a write first waited for a drain

    @staticmethod
    def of(send: Send | None) -> DirectConnection | None:
        """The connection behind uvicorn's own ``send`` once the response has started chunked,
        or None (another server, or not chunked)."""
        cycle = getattr(send, "__self__", None)
        needed = ("transport", "flow", "message_event", "disconnected", "chunked_encoding")
        if cycle is None or not all(hasattr(cycle, name) for name in needed):
            return None
        return DirectConnection(cycle) if cycle.chunked_encoding else None

    def writable(self) -> bool:
        return not self._flow.write_paused and not self._cycle.disconnected

    def write(self, chunk: bytes) -> None:
        self._transport.write(chunk_frame(chunk))

    def write_framed(self, framed: bytes) -> None:
        self._transport.write(framed)

    def wake(self) -> None:
        self._cycle.message_event.set()

    def abort(self) -> None:
        """Drop the connection now (a client stuck past the send timeout)."""
        self._transport.abort()

    async def serve(self, outbox: Outbox, flusher: Flusher) -> bool:
        """Write ``outbox`` until its stream is done (then True) or the client is gone (False).
        Wakes only when the outbox needs it: paused by a slow reader, or ended."""
        cycle, flow = self._cycle, self._flow
        event: asyncio.Event = cycle.message_event
        outbox.sink = self
        while True:
            event.clear()
            if cycle.disconnected:
                return False
            if flow.write_paused:
                if self.paused_since is None:
                    self.paused_since = asyncio.get_running_loop().time()
                await flow.drain()
                continue
            self.paused_since = None
            flusher.count(*outbox.flush())
            if outbox.done:
                if outbox.final is not None:
                    self.write(outbox.final)
                return True
            await event.wait()


class AsgiConnection:
    """The same through plain ASGI ``send`` (any server): every write wakes this task."""

    __slots__ = ("_lost", "_receive", "_send", "_wakeup", "paused_since")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive, self._send = receive, send
        self._wakeup = asyncio.Event()
        self._lost = False
        self.paused_since: float | None = None

    def writable(self) -> bool:
        return False  # every write goes through serve()

    def write(self, chunk: bytes) -> None:
        raise NotImplementedError  # never writable

    def write_framed(self, framed: bytes) -> None:
        raise NotImplementedError  # never writable

    def wake(self) -> None:
        self._wakeup.set()

    def abort(self) -> None:
        self._lost = True
        self._wakeup.set()

    async def _body(self, chunk: bytes) -> None:
        await self._send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def _watch_disconnect(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.abort()

    async def serve(self, outbox: Outbox, flusher: Flusher) -> bool:
        """As :meth:`DirectConnection.serve`."""
        watcher = asyncio.create_task(self._watch_disconnect())
        outbox.sink = self
        try:
            while not self._lost:
                self._wakeup.clear()
                outbox.scheduled = False
                chunk, count, ingest_ns = outbox.take()
                if chunk:
                    await self._send(
                        {"type": "http.response.body", "body": chunk, "more_body": True}
                    )
                    flusher.count(1, count, ingest_ns)
                elif outbox.done:
                    final = outbox.final or b""
                    await self._send(
                        {"type": "http.response.body", "body": final, "more_body": True}
                    )
                    return True
                else:
                    await self._wakeup.wait()
            return False
        finally:
            watcher.cancel()
