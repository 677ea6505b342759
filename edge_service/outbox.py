"""One client's outbox: the SSE bytes queued for its connection, bounded, with the slow-consumer
policy. Pure bookkeeping: the connection that writes it out is a :class:`Sink`.

Slow consumer policy (bounded in events and bytes):
- past half the event limit the client is "behind": a new quote replaces the quote of the same
  symbol still queued (latest wins; the quote ``sequence`` then jumps); trades are never dropped;
- past the event or the byte limit it is ended with a final ``disconnect`` event (reason
  ``slow_consumer``) and resumes with Last-Event-ID like any reconnect;
- once its queue is written out it is no longer behind.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from .encoding import encode_control
from .metrics import EdgeMetrics

WRITE_LIMIT = 64 * 1024
"""Bytes per write, about: a client far behind is written in slices, the rest staying queued (and
conflatable) until its connection drains."""


class Sink(Protocol):
    """Where an outbox's bytes go: the client's connection."""

    def writable(self) -> bool:
        """True when a write now goes straight to the socket (not paused, not lost)."""

    def write(self, chunk: bytes) -> None:
        """Hand ``chunk`` (one or more whole SSE events) to the connection; never blocks."""

    def write_framed(self, framed: bytes) -> None:
        """Hand over bytes already framed for the connection (``delivery.chunk_frame``)."""

    def wake(self) -> None:
        """The outbox needs its connection's own task: it is paused, or the stream has ended."""


class _QuoteSlot:
    """A queued quote that a newer quote of the same symbol may still replace."""

    __slots__ = ("frame", "ingest_ns")

    def __init__(self, frame: bytes, ingest_ns: int) -> None:
        self.frame: bytes | None = frame
        self.ingest_ns = ingest_ns


class Outbox:
    """Queued SSE bytes of one stream: ``(frames, events, ingest ns of the oldest tick or 0)``
    entries or conflatable quotes, at most ``event_limit`` events and ``byte_limit`` bytes.

    ``on_ready(outbox)`` is called once when the first bytes arrive after a write (or at the end
    of the stream): the caller then writes them out with :meth:`flush`, one write per pass.
    """

    __slots__ = (
        "_byte_limit",
        "_conflating",
        "_event_limit",
        "_metrics",
        "_on_ready",
        "_queue",
        "active",
        "ended",
        "final",
        "queued",
        "queued_bytes",
        "scheduled",
        "sink",
    )

    def __init__(
        self,
        *,
        event_limit: int,
        byte_limit: int,
        metrics: EdgeMetrics,
        on_ready: Callable[[Outbox], None],
    ) -> None:
        # Made on the first push: an empty deque costs about 600 bytes, and most streams
        # never queue (the fan-out writes steady clients directly).
        self._queue: deque[tuple[bytes, int, int] | _QuoteSlot] | None = None
        self.queued = 0  # events queued (an entry may hold several)
        self.queued_bytes = 0
        self._event_limit = event_limit
        self._byte_limit = byte_limit
        # symbol -> its newest queued quote, while the client is behind (None: not behind)
        self._conflating: dict[str, _QuoteSlot] | None = None
        self._metrics = metrics
        self._on_ready = on_ready
        self.active = False  # something was written since the last heartbeat round
        self.scheduled = False  # on_ready was called and flush has not run since
        self.sink: Sink | None = None  # the connection, once the response has started
        self.final: bytes | None = None  # the disconnect event, once ended
        self.ended = False

    @property
    def backlogged(self) -> bool:
        """More than a quarter of either bound queued: a producer that can wait for the client
        (a resume's catch-up reading history) should, rather than make it a slow consumer."""
        return self.queued > self._event_limit // 4 or self.queued_bytes > self._byte_limit // 4

    @property
    def behind(self) -> bool:
        """True while quotes conflate (the queue passed half its event limit)."""
        return self._conflating is not None

    # ----- in --------------------------------------------------------------------------------

    def push(self, frames: bytes, count: int = 1, ingest_ns: int = 0) -> None:
        """Queue ``count`` events' bytes (``ingest_ns``: of the oldest tick among them, 0 for
        none). Ignored once the stream has ended."""
        if self.ended:
            return
        self._entries().append((frames, count, ingest_ns))
        self._account(count, len(frames))

    def push_quote(self, symbol: str, frame: bytes, ingest_ns: int) -> None:
        """Queue one quote; while behind it replaces ``symbol``'s queued quote (the older one is
        dropped, the newer appended, so offsets stay in order)."""
        if self._conflating is None or self.ended:
            self.push(frame, 1, ingest_ns)
            return
        slot = self._conflating.get(symbol)
        if slot is not None and slot.frame is not None:
            self.queued -= 1
            self.queued_bytes -= len(slot.frame)
            slot.frame = None
            self._metrics.conflated.inc()
        slot = self._conflating[symbol] = _QuoteSlot(frame, ingest_ns)
        self._entries().append(slot)
        self._account(1, len(frame))

    def _entries(self) -> deque[tuple[bytes, int, int] | _QuoteSlot]:
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        return queue

    def _account(self, count: int, size: int) -> None:
        self.queued += count
        self.queued_bytes += size
        if self.queued > self._event_limit or self.queued_bytes > self._byte_limit:
            self.end(
                "slow_consumer",
                f"more than {self._event_limit} events or {self._byte_limit} bytes "
                "queued; reconnect with Last-Event-ID",
                drop_queued=True,
            )
            return
        if self._conflating is None and self.queued > self._event_limit // 2:
            self._conflating = {}
        self._ready()

    def _ready(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            self._on_ready(self)

    def heartbeat(self, frame: bytes) -> None:
        """Queue the comment ``frame`` unless the stream carried anything since the last call:
        a busy stream needs no keep-alive."""
        if not self.active and not self._queue:
            self.push(frame, 0)
        self.active = False

    def end(
        self, reason: str, message: str, retry_ms: int | None = None, drop_queued: bool = False
    ) -> None:
        """Finish the stream with a ``disconnect`` event after what is queued (nothing queued is
        kept with ``drop_queued``, or when ``retry_ms`` is given: shutting down, the backlog
        would delay the farewell; the client resumes from the last event it did get).
        ``retry_ms`` adds a ``retry:`` field telling the client when to reconnect."""
        if self.ended:
            return
        if (drop_queued or retry_ms is not None) and self._queue:
            self._queue.clear()
            self.queued = self.queued_bytes = 0
        self._metrics.disconnects.labels(reason).inc()
        self.final = encode_control(
            "disconnect", {"reason": reason, "message": message}, retry_ms=retry_ms
        )
        self.ended = True
        self._ready()

    # ----- out -------------------------------------------------------------------------------

    def take(self, limit: int = WRITE_LIMIT) -> tuple[bytes, int, int]:
        """The next write: queued bytes up to about ``limit``, how many events they hold and the
        ingest time of the oldest tick among them (0: none). Empty when nothing is queued."""
        queue = self._entries()
        if len(queue) == 1 and type(entry := queue[0]) is tuple:
            queue.clear()
            chunk, count, ingest_ns = entry
        else:
            parts: list[bytes] = []
            size = count = ingest_ns = 0
            while queue and size < limit:
                item = queue.popleft()
                if type(item) is tuple:
                    frame, events, first_ns = item
                elif item.frame is not None:
                    frame, events, first_ns = item.frame, 1, item.ingest_ns
                else:
                    continue
                parts.append(frame)
                size += len(frame)
                count += events
                ingest_ns = ingest_ns or first_ns
            chunk = b"".join(parts)
        self.queued -= count
        self.queued_bytes -= len(chunk)
        self.active = True
        if not queue:
            self._conflating = None  # caught up with everything queued
        return chunk, count, ingest_ns

    def flush(self) -> tuple[int, int, int]:
        """Write what is queued to the sink while it takes writes; wake the sink's own task when
        bytes remain or the stream has ended. Returns (writes, events, ingest ns of the oldest
        tick of the first write or 0)."""
        self.scheduled = False
        sink = self.sink
        if sink is None:  # the response has not started: it flushes when it does
            return 0, 0, 0
        writes = events = first_ns = 0
        while self._queue and sink.writable():
            chunk, count, ingest_ns = self.take()
            if chunk:
                sink.write(chunk)
                writes += 1
                events += count
                first_ns = first_ns or ingest_ns
        if self._queue or self.ended:
            sink.wake()
        return writes, events, first_ns

    @property
    def done(self) -> bool:
        """Ended, and nothing but the final event is left to write."""
        return self.ended and not self._queue
