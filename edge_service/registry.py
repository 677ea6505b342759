"""Every open SSE stream, in one place: admission and release, heartbeats, clients stuck past the
send timeout, shutdown, and the queue gauges.

One task (:meth:`StreamRegistry.run`) does the periodic work for all streams at once, once a
second: no timer per stream and none around each write.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sse_starlette import ServerSentEvent

from .delivery import Flusher
from .limits import StreamLimits
from .metrics import EdgeMetrics
from .outbox import Outbox

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 1.0
SHUTDOWN_GRACE_S = 2.0  # for each stream to write its farewell once shutdown starts
HEARTBEAT = ServerSentEvent(comment="ping", sep="\n").encode()


class Connection(Protocol):
    """What the registry needs of a stream's connection."""

    paused_since: float | None  # loop time its writes began waiting for a drain (None: not)

    def abort(self) -> None:
        """Drop the connection now."""


class Closable(Protocol):
    outbox: Outbox

    def close(self) -> None:
        """Stop producing for the stream (detach, cancel any catch-up)."""


@dataclass(slots=True, eq=False)
class Stream:
    """One open SSE stream: its session, its connection once the response started, and the
    release of everything it holds (limits, upstreams, token expiry)."""

    session: Closable
    release: Callable[[], None]
    connection: Connection | None = None


class StreamRegistry:
    """Admits, tracks and ends the edge's SSE streams. ``ping_interval`` and ``send_timeout``
    are seconds; ``retry_ms`` is the base of the jittered ``retry`` sent at shutdown."""

    def __init__(
        self,
        limits: StreamLimits,
        metrics: EdgeMetrics,
        *,
        queue_events: int,
        queue_bytes: int,
        ping_interval: float,
        send_timeout: float,
        retry_ms: int,
    ) -> None:
        self.limits = limits
        self.flusher = Flusher(metrics)
        self._metrics = metrics
        self._queue_events, self._queue_bytes = queue_events, queue_bytes
        self._ping_interval, self._send_timeout = ping_interval, send_timeout
        self._retry_ms = retry_ms
        self._streams: set[Stream] = set()
        self.shutting_down = False
        metrics.watch_queues(self._outboxes)

    def __len__(self) -> int:
        return len(self._streams)

    def _outboxes(self) -> list[Outbox]:
        return [stream.session.outbox for stream in self._streams]

    def outbox(self) -> Outbox:
        """A new stream's outbox, bounded by the configured limits, written by the flusher."""
        return Outbox(
            event_limit=self._queue_events,
            byte_limit=self._queue_bytes,
            metrics=self._metrics,
            on_ready=self.flusher.mark,
        )

    def add(self, session: Closable, release: Callable[[], None]) -> Stream:
        """Track a new stream; ``release`` runs once when it is removed. A stream opened during
        shutdown is ended at once."""
        stream = Stream(session, release)
        self._streams.add(stream)
        self._metrics.open_streams.inc()
        if self.shutting_down:
            self._farewell(stream, self._retry_ms)
        return stream

    def remove(self, stream: Stream) -> None:
        """The stream's response is over: stop its session and release what it held."""
        if stream not in self._streams:
            return
        self._streams.discard(stream)
        self._metrics.open_streams.dec()
        stream.session.close()
        stream.release()

    async def run(self) -> None:
        """Once a second: a comment heartbeat, every ``ping_interval``, to each stream that sent
        nothing since the last round; drop connections whose writes have waited for a drain
        longer than ``send_timeout``; forget refilled connect-rate buckets."""
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + self._ping_interval
        while True:
            await asyncio.sleep(min(SWEEP_INTERVAL_S, self._ping_interval))
            now = loop.time()
            if now >= next_ping:
                next_ping = now + self._ping_interval
                for stream in list(self._streams):
                    stream.session.outbox.heartbeat(HEARTBEAT)
            self._drop_stuck(now)
            self.limits.prune()

    def _drop_stuck(self, now: float) -> None:
        for stream in list(self._streams):
            connection = stream.connection
            since = connection.paused_since if connection is not None else None
            if since is not None and now - since > self._send_timeout:
                log.info("dropping a client whose writes waited %.1fs for a drain", now - since)
                connection.abort()  # type: ignore[union-attr]

    def shutdown(self) -> None:
        """The server is stopping: end every stream with a ``disconnect`` whose ``retry`` is
        jittered between 1x and 4x ``retry_ms``, so clients do not all return at once; after
        SHUTDOWN_GRACE_S, drop the connections that could not take their farewell."""
        if self.shutting_down:
            return
        self.shutting_down = True
        for stream in list(self._streams):
            self._farewell(stream, random.randint(self._retry_ms, max(self._retry_ms, 1) * 4))
        asyncio.get_running_loop().call_later(SHUTDOWN_GRACE_S, self._abort_all)

    def _farewell(self, stream: Stream, retry_ms: int) -> None:
        stream.session.outbox.end("shutdown", "the edge is shutting down; reconnect", retry_ms)

    def _abort_all(self) -> None:
        for stream in list(self._streams):
            if stream.connection is not None:
                stream.connection.abort()
