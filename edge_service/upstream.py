"""One shared gRPC ``Subscribe`` per symbol, reconnecting with jittered exponential backoff."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import grpc
from tickstream.v1 import feed_pb2, feed_pb2_grpc, tick_pb2

from .books import BookViews
from .encoding import BOOK, EncodedTick, book_kind, encode_status, encode_tick
from .metrics import EdgeMetrics
from .reader import Opened, Progress, Reset, SubscribeReader, Ticks

log = logging.getLogger(__name__)

StubSource = Callable[[], feed_pb2_grpc.FeedServiceStub]
"""The blocking stub of the feed replica in use, taken anew at each (re)subscription, so an
upstream that lost its replica resubscribes on the one the edge moved to."""

INBOX_LIMIT = 64
"""Feed messages (each up to 500 ticks) read but not yet handled; a reader thread that finds the
inbox full waits, so the gRPC stream's flow control holds the feed back instead of the edge's
memory growing when ticks come faster than the loop encodes them."""
DRAIN_LIMIT = 8
"""Messages handled per turn of the event loop: under a flood, client writes and new requests
still run between turns."""
BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 3.0
TERMINAL_CODES = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


DROP_TRADE_ENV = "TICKSTREAM_TEST_DROP_TRADE"
"""Test-only, the chaos run's deliberately broken build (``make chaos`` proves its checker can
fail with it): set to N, the edge leaves the Nth live trade it receives out of every stream.
Never set in a deployment."""


class _TradeDrop:
    """Drops one live trade, the ``nth`` (1-based) received; ``left`` is 0 once done or unset."""

    __slots__ = ("left",)

    def __init__(self, nth: int) -> None:
        self.left = nth

    def filter(self, live: list[EncodedTick]) -> list[EncodedTick]:
        for index, tick in enumerate(live):
            if tick.kind == "trade":
                self.left -= 1
                if not self.left:
                    log.error("%s: dropped the trade at offset %d", DROP_TRADE_ENV, tick.offset)
                    return live[:index] + live[index + 1 :]
        return live


_DROP = _TradeDrop(int(os.environ.get(DROP_TRADE_ENV) or 0))


class UpstreamUnavailable(Exception):
    """The feed did not open a symbol's stream in time (the edge answers 503)."""


class TickDispatch:
    """The live ticks a source hands its listeners at once, in offset order, and where the
    source stood after them: every tick up to ``watermark`` in ``epoch`` was dispatched.

    ``frames(kinds)`` joins the SSE bytes of the ticks of ``kinds`` once per dispatch; every
    client of those kinds shares the result.
    """

    __slots__ = ("_frames", "epoch", "ingest_ns", "ticks", "watermark")

    def __init__(self, ticks: list[EncodedTick], epoch: str | None, watermark: int) -> None:
        self.ticks = ticks
        self.epoch, self.watermark = epoch, watermark
        self.ingest_ns = ticks[0].ingest_ns if ticks else 0  # of the oldest tick
        self._frames: dict[frozenset[str], tuple[bytes, int]] = {}

    def frames(self, kinds: frozenset[str]) -> tuple[bytes, int]:
        """The joined frames of the ticks whose kind is in ``kinds``, and how many."""
        joined = self._frames.get(kinds)
        if joined is None:
            chosen = [t.frame for t in self.ticks if t.kind in kinds]
            joined = self._frames[kinds] = (b"".join(chosen), len(chosen))
        return joined


class TickSource(Protocol):
    """What a client follows: one symbol's upstream, or the merge of several."""

    epoch: str | None
    watermark: int
    symbols: list[str]

    def snapshot(self, kinds: Iterable[str]) -> list[EncodedTick]:
        """The latest tick of each kind in ``kinds``, in offset order."""

    def stale_frames(self) -> list[bytes]:
        """The ``status`` events of the symbols that are stale now."""


class TickListener(Protocol):
    """What a source calls; every call is synchronous and must not block."""

    def on_ticks(self, source: Any, dispatch: TickDispatch) -> None:
        """Live ticks after the previous watermark (possibly none: progress only)."""

    def on_reset(self, source: Any, reason: str, message: str, symbols: list[str]) -> None:
        """The stream of ``symbols`` could not continue where it was: ``source.epoch`` and
        ``watermark`` are new."""

    def on_status(self, source: Any, frame: bytes) -> None:
        """A symbol turned stale or live again; ``frame`` is the SSE ``status`` event."""

    def on_closed(self, source: Any, reason: str) -> None:
        """The stream ended for good (e.g. the feed no longer serves a symbol)."""


def backoff_delay(attempt: int) -> float:
    """Seconds to wait before reconnect ``attempt`` (0-based): exponential, capped, full jitter
    in the upper half so many edges do not return at once."""
    ceiling = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2**attempt)
    return random.uniform(ceiling / 2, ceiling)


_CONNECTED = object()  # inbox marker: the next message opens a new call
UPSTREAM_TYPES = (
    tick_pb2.TICK_TYPE_TRADE,
    tick_pb2.TICK_TYPE_QUOTE,
    tick_pb2.TICK_TYPE_BOOK,
    tick_pb2.TICK_TYPE_BAR,
)


def subscribe_request(symbol: str, position: tuple[str | None, int]) -> feed_pb2.SubscribeRequest:
    """An upstream's Subscribe: the live edge with a snapshot at first, then, once it has a
    ``position`` (epoch, watermark), after it (a resume; the feed answers a reset if it can't)."""
    request = feed_pb2.SubscribeRequest(
        symbols=[symbol], types=UPSTREAM_TYPES, snapshot=True, progress_updates=True
    )
    epoch, watermark = position
    if epoch is not None:
        request.after.epoch = epoch
        request.after.offset = watermark
    return request


class SymbolUpstream:
    """The edge's single subscription to one symbol, shared by every client of that symbol.

    Holds the stream position (``epoch``, ``watermark``: every tick up to it was dispatched) and
    the latest trade and quote as encoded events, for snapshots. Each tick is encoded to SSE
    bytes once here; listeners share the bytes. After a transport failure it resubscribes after
    its watermark, so listeners see no gap when the feed's history covers the outage, and a
    ``reset`` otherwise.

    The gRPC stream is read by a thread of its own (a blocking iterator), so reading never waits
    for a busy event loop: the thread queues messages and the loop drains all that arrived in
    one go and dispatches them to listeners as one :class:`TickDispatch`. The busier the loop,
    the larger the dispatches; at light load each tick is dispatched alone, at once.
    """

    def __init__(
        self,
        symbol: str,
        stub: StubSource,
        metrics: EdgeMetrics,
        stall_timeout: float,
    ) -> None:
        self.symbol = symbol
        self.epoch: str | None = None
        self.watermark = 0
        self.latest: dict[str, EncodedTick] = {}
        self.books = BookViews()
        self.depths: dict[int, int] = {}  # book depth -> fan-outs of this upstream using it
        self.listeners: set[TickListener] = set()
        self.fan_outs: dict[frozenset[str], TickListener] = {}  # see fanout.join
        # The symbol's ``status`` event while it is stale (None while live).
        self.stale_frame: bytes | None = None
        self.last_tick_ns = 0  # when the feed accepted the newest tick seen (ns since epoch)
        self.ready = asyncio.Event()
        self.connected = False
        self.closed_reason: str | None = None
        self._stub = stub
        self._metrics = metrics
        self._stall_timeout = stall_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._call: grpc.Future | None = None
        # (epoch, watermark) as one tuple, so the reader thread reads a consistent pair.
        self._position: tuple[str | None, int] = (None, 0)
        self._inbox: deque[object] = deque()
        self._room = threading.Semaphore(INBOX_LIMIT)
        self._drain_scheduled = False
        self._reader = SubscribeReader()
        self._last_message = 0.0
        self._watchdog: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._last_message = self._loop.time()
        self._thread = threading.Thread(
            target=_read_forever, args=(self,), name=f"upstream-{self.symbol}", daemon=True
        )
        self._thread.start()
        self._watchdog = asyncio.create_task(_watch_stalls(self), name=f"watchdog-{self.symbol}")

    async def stop(self) -> None:
        """Cancel the stream and wait (bounded) for the reader thread to end."""
        self._stopping.set()
        call = self._call
        if call is not None:
            call.cancel()
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)

    @property
    def symbols(self) -> list[str]:
        return [self.symbol]

    def snapshot(self, kinds: Iterable[str]) -> list[EncodedTick]:
        """The latest encoded tick of each kind in ``kinds`` that has one, in offset order."""
        latest = [tick for kind in kinds if (tick := self.latest.get(kind)) is not None]
        return sorted(latest, key=lambda t: t.offset)

    def stale_frames(self) -> list[bytes]:
        """The symbol's ``status`` event while it is stale; empty while live."""
        return [] if self.stale_frame is None else [self.stale_frame]

    def want_depth(self, depth: int) -> None:
        """A fan-out wants book events of ``depth`` levels a side: encoded from now on, and the
        current book's at once (for snapshots)."""
        count = self.depths.get(depth, 0)
        self.depths[depth] = count + 1
        if not count and self.epoch is not None:
            current = self.books.current(self.symbol, depth, self.epoch)
            if current is not None:
                self.latest[current.kind] = current

    def drop_depth(self, depth: int) -> None:
        """A fan-out of ``depth`` is gone; the last one stops its encoding."""
        count = self.depths.get(depth, 0) - 1
        if count > 0:
            self.depths[depth] = count
        else:
            self.depths.pop(depth, None)
            self.latest.pop(book_kind(depth), None)

    # ----- reader thread -------------------------------------------------------------------

    def _post(self, item: object) -> None:
        """Queue ``item`` for the loop (reader thread), waiting while the inbox is full."""
        while not self._room.acquire(timeout=0.5):
            if self._stopping.is_set():
                return
        self._inbox.append(item)
        if not self._drain_scheduled:
            self._drain_scheduled = True
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop closed under us: shutting down
                self._stopping.set()

    # ----- event loop ----------------------------------------------------------------------

    def _drain(self) -> None:
        """Handle up to DRAIN_LIMIT queued messages, dispatching their live ticks once; another
        turn is scheduled when more wait."""
        self._drain_scheduled = False
        assert self._loop is not None
        self._last_message = self._loop.time()
        live: list[EncodedTick] = []
        progressed = False
        inbox = self._inbox
        for _ in range(min(len(inbox), DRAIN_LIMIT)):
            item = inbox.popleft()
            self._room.release()
            if item is _CONNECTED:
                self._reader = SubscribeReader()
            elif item is None:
                self.connected = False
                self._metrics.upstream_reconnects.inc()
            elif isinstance(item, str):
                self._flush(live, progressed)
                live, progressed = [], False
                self._close(item)
                return
            else:
                assert isinstance(item, feed_pb2.SubscribeResponse)
                event = self._reader.read(item)
                if isinstance(event, Ticks):
                    self._take_batch(event.batch, live)
                    progressed = True
                elif isinstance(event, (Opened, Progress)):
                    progressed = self._on_heartbeat(event) or progressed
                elif event is not None:  # a reset or a status: ticks before it go first
                    self._flush(live, progressed)
                    live, progressed = [], False
                    if isinstance(event, Reset):
                        self._on_reset(event)
                    else:
                        self._on_status(event.status)
        self._flush(live, progressed)
        if inbox and not self._drain_scheduled:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _on_heartbeat(self, beat: Opened | Progress) -> bool:
        if isinstance(beat, Opened):
            self.connected = True
            if self.epoch is None:
                # Ready once the snapshot batch that follows has filled ``latest``.
                self.epoch, self.watermark = beat.epoch, beat.head
                self._position = (self.epoch, self.watermark)
                log.info("upstream %s: subscribed at %s-%d", self.symbol, *self._position)
            return False
        if beat.epoch == self.epoch and beat.head > self.watermark:
            self.watermark = beat.head
            return True
        return False

    def _on_reset(self, reset: Reset) -> None:
        log.warning("upstream %s: reset (%s): %s", self.symbol, reset.reason, reset.message)
        self.epoch, self.watermark = reset.epoch, reset.head
        self._position = (self.epoch, self.watermark)
        self.latest.clear()
        self.books.clear()
        for listener in list(self.listeners):
            listener.on_reset(self, reset.reason, reset.message, [self.symbol])

    def _on_status(self, status: feed_pb2.SymbolStatus) -> None:
        """Pass on a change of the symbol's state. A stream opens with the symbol's state, so
        after a reconnect an unchanged state is not repeated to clients."""
        stale = status.state == feed_pb2.SYMBOL_STATE_STALE
        if status.HasField("last_tick_time"):
            self.last_tick_ns = max(self.last_tick_ns, status.last_tick_time.ToNanoseconds())
        if stale == (self.stale_frame is not None):
            return
        status.symbol = self.symbol
        frame = encode_status(status)
        self.stale_frame = frame if stale else None
        log.info("upstream %s: %s", self.symbol, "stale" if stale else "live again")
        for listener in list(self.listeners):
            listener.on_status(self, frame)

    def _take_batch(self, batch: feed_pb2.TickBatch, live: list[EncodedTick]) -> None:
        assert self.epoch is not None
        if self.stale_frame is not None and batch.ticks:
            # Ticks mean live: the change happened while we were reconnecting.
            self._on_status(feed_pb2.SymbolStatus(state=feed_pb2.SYMBOL_STATE_LIVE))
        epoch, watermark, latest = self.epoch, self.watermark, self.latest
        encoded = None
        # The hot loop (about 1 us a tick beside encode_tick's 2-5): the encoded tick's plain
        # fields are read, not the message's again (a protobuf field read costs 0.1-0.2 us).
        for tick in batch.ticks:
            encoded = encode_tick(tick, epoch)
            if encoded.kind == BOOK:  # one event per depth in use, after the update
                for event in self.books.take(tick, self.depths, epoch):
                    latest[event.kind] = event
                    if encoded.offset > watermark:
                        live.append(event)
                continue
            latest[encoded.kind] = encoded
            if encoded.offset > watermark:
                live.append(encoded)
        if encoded is not None:  # offset order: the last is the newest
            self.last_tick_ns = max(self.last_tick_ns, encoded.ingest_ns)
        self.watermark = max(watermark, batch.head_offset)
        self.ready.set()

    def _flush(self, live: list[EncodedTick], progressed: bool) -> None:
        if not (live or progressed):
            return
        if _DROP.left:
            live = _DROP.filter(live)
        self._position = (self.epoch, self.watermark)
        dispatch = TickDispatch(live, self.epoch, self.watermark)
        for listener in list(self.listeners):
            listener.on_ticks(self, dispatch)

    def _close(self, reason: str) -> None:
        log.warning("upstream %s: closed: %s", self.symbol, reason)
        self.closed_reason = reason
        self.ready.set()
        for listener in list(self.listeners):
            listener.on_closed(self, f"{self.symbol}: {reason}")


def _read_forever(upstream: SymbolUpstream) -> None:
    """The reader thread: the upstream's Subscribe calls, one after another, every message
    posted to its inbox; reconnects with backoff until stopped or refused for good."""
    attempt, failing = 0, ""  # failing: the status last logged, so a down feed is said once
    while not upstream._stopping.is_set():
        call = upstream._stub().Subscribe(subscribe_request(upstream.symbol, upstream._position))
        upstream._call = call
        upstream._post(_CONNECTED)
        try:
            for response in call:
                attempt, failing = 0, ""
                upstream._post(response)
            if not upstream._stopping.is_set():
                log.warning("upstream %s: stream ended by the feed; reconnecting", upstream.symbol)
        except grpc.RpcError as error:
            if upstream._stopping.is_set():
                return
            code = error.code()
            if code in TERMINAL_CODES:
                upstream._post(f"{code.name}: {error.details()}")
                return
            if code.name != failing:
                failing = code.name
                details = error.details()
                log.warning("upstream %s: %s (%s); reconnecting", upstream.symbol, failing, details)
        upstream._post(None)  # disconnected
        if upstream._stopping.wait(backoff_delay(attempt)):
            return
        attempt += 1


async def _watch_stalls(upstream: SymbolUpstream) -> None:
    """Cancel ``upstream``'s call when it stays silent past its stall timeout (the feed
    heartbeats every second): a SIGSTOPped feed or a black-holed link; the reader thread then
    reconnects."""
    loop = asyncio.get_running_loop()
    timeout = upstream._stall_timeout
    while True:
        await asyncio.sleep(min(1.0, timeout / 2))
        silent = loop.time() - upstream._last_message
        if silent > timeout and upstream._call is not None:
            log.warning("upstream %s: no message for %.1fs; reconnecting", upstream.symbol, silent)
            upstream._last_message = loop.time()
            upstream._call.cancel()


class UpstreamPool:
    """Opens a :class:`SymbolUpstream` on first interest and closes it ``linger`` seconds after
    its last listener leaves."""

    def __init__(
        self,
        stub: StubSource,
        metrics: EdgeMetrics,
        linger: float,
        stall_timeout: float,
    ) -> None:
        self._stub = stub
        self._stall_timeout = stall_timeout
        self._metrics = metrics
        self._linger = linger
        self._upstreams: dict[str, SymbolUpstream] = {}
        self._closers: dict[str, asyncio.TimerHandle] = {}
        self._waiting: dict[str, int] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._upstreams)

    def get(self, symbol: str) -> SymbolUpstream | None:
        return self._upstreams.get(symbol)

    def upstreams(self) -> list[SymbolUpstream]:
        """Every open upstream."""
        return list(self._upstreams.values())

    async def acquire(self, symbols: list[str], max_wait: float) -> list[SymbolUpstream]:
        """The ready upstreams of ``symbols``, opened if needed. Call :meth:`attach` next,
        without awaiting in between.

        Raises UpstreamUnavailable when one is not ready within ``max_wait`` seconds or was
        closed by the feed.
        """
        upstreams = [self._open(symbol) for symbol in symbols]
        if all(u.ready.is_set() and u.closed_reason is None for u in upstreams) and (
            len({u.epoch for u in upstreams}) == 1
        ):
            return upstreams  # the common case: nothing to wait for
        for symbol in symbols:
            self._waiting[symbol] = self._waiting.get(symbol, 0) + 1
        try:
            async with asyncio.timeout(max_wait):
                for upstream in upstreams:
                    await upstream.ready.wait()
                # Just after a feed restart some upstreams may still be on the old epoch:
                # wait (briefly: they reconnect within seconds) until all agree.
                while len({u.epoch for u in upstreams if u.closed_reason is None}) > 1:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise UpstreamUnavailable("the feed did not open the stream in time") from None
        finally:
            for symbol in symbols:
                self._waiting[symbol] -= 1
                if not self._waiting[symbol]:
                    del self._waiting[symbol]
                self._maybe_linger(symbol)
        closed = [u for u in upstreams if u.closed_reason is not None]
        if closed:
            raise UpstreamUnavailable(f"{closed[0].symbol}: {closed[0].closed_reason}")
        return upstreams

    def attach(self, listener: TickListener, upstreams: list[SymbolUpstream]) -> None:
        for upstream in upstreams:
            upstream.listeners.add(listener)
            self._cancel_linger(upstream.symbol)

    def detach(self, listener: TickListener, symbols: Iterable[str]) -> None:
        for symbol in symbols:
            upstream = self._upstreams.get(symbol)
            if upstream is not None:
                upstream.listeners.discard(listener)
                self._maybe_linger(symbol)

    def release(self, symbols: Iterable[str]) -> None:
        """Their listeners are gone: close each idle upstream after the linger."""
        for symbol in symbols:
            self._maybe_linger(symbol)

    def _open(self, symbol: str) -> SymbolUpstream:
        upstream = self._upstreams.get(symbol)
        if upstream is None or upstream.closed_reason is not None:
            upstream = SymbolUpstream(symbol, self._stub, self._metrics, self._stall_timeout)
            self._upstreams[symbol] = upstream
            self._metrics.upstreams.set(len(self._upstreams))
            upstream.start()
        self._cancel_linger(symbol)
        return upstream

    def _cancel_linger(self, symbol: str) -> None:
        handle = self._closers.pop(symbol, None)
        if handle is not None:
            handle.cancel()

    def _maybe_linger(self, symbol: str) -> None:
        upstream = self._upstreams.get(symbol)
        if upstream is None or upstream.listeners or symbol in self._waiting:
            return
        if symbol not in self._closers:
            loop = asyncio.get_running_loop()
            self._closers[symbol] = loop.call_later(self._linger, self._close_idle, symbol)

    def _close_idle(self, symbol: str) -> None:
        self._closers.pop(symbol, None)
        upstream = self._upstreams.get(symbol)
        if upstream is None or upstream.listeners or symbol in self._waiting:
            return
        del self._upstreams[symbol]
        self._metrics.upstreams.set(len(self._upstreams))
        log.info("upstream %s: no clients for %.1fs, closing", symbol, self._linger)
        task = asyncio.get_running_loop().create_task(upstream.stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def close(self) -> None:
        for handle in self._closers.values():
            handle.cancel()
        self._closers.clear()
        upstreams, self._upstreams = list(self._upstreams.values()), {}
        await asyncio.gather(*(u.stop() for u in upstreams))
