"""One shared gRPC ``Subscribe`` per symbol, reconnecting with jittered exponential backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable
from typing import Protocol

import grpc
from tickstream.v1 import feed_pb2, feed_pb2_grpc

from .encoding import EncodedTick, encode_tick
from .metrics import EdgeMetrics

log = logging.getLogger(__name__)

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


class UpstreamUnavailable(Exception):
    """The feed did not open a symbol's stream in time (the edge answers 503)."""


class UpstreamListener(Protocol):
    """What an upstream calls; every call is synchronous and must not block."""

    def on_ticks(self, upstream: SymbolUpstream, ticks: list[EncodedTick]) -> None:
        """Live ticks after the previous watermark (possibly none: progress only)."""

    def on_reset(self, upstream: SymbolUpstream, reason: str, message: str) -> None:
        """The stream could not continue where it was: ``upstream.epoch``/``watermark`` are new."""

    def on_closed(self, upstream: SymbolUpstream, reason: str) -> None:
        """The symbol's stream ended for good (e.g. the feed no longer serves the symbol)."""


def backoff_delay(attempt: int) -> float:
    """Seconds to wait before reconnect ``attempt`` (0-based): exponential, capped, full jitter
    in the upper half so many edges do not return at once."""
    ceiling = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2**attempt)
    return random.uniform(ceiling / 2, ceiling)


class SymbolUpstream:
    """The edge's single subscription to one symbol, shared by every client of that symbol.

    Holds the stream position (``epoch``, ``watermark``: every tick up to it was dispatched) and
    the latest trade and quote as encoded events, for snapshots. Each tick is encoded to SSE
    bytes once here; listeners share the bytes. After a transport failure it resubscribes after
    its watermark, so listeners see no gap when the feed's history covers the outage, and a
    ``reset`` otherwise.
    """

    def __init__(
        self,
        symbol: str,
        stub: feed_pb2_grpc.FeedServiceStub,
        metrics: EdgeMetrics,
        stall_timeout: float,
    ) -> None:
        self.symbol = symbol
        self._stall_timeout = stall_timeout
        self.epoch: str | None = None
        self.watermark = 0
        self.latest: dict[str, EncodedTick] = {}
        self.listeners: set[UpstreamListener] = set()
        self.ready = asyncio.Event()
        self.connected = False
        self.closed_reason: str | None = None
        self._stub = stub
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"upstream-{self.symbol}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def snapshot(self, kinds: Iterable[str]) -> list[EncodedTick]:
        """The latest encoded tick of each kind in ``kinds`` that has one."""
        return [tick for kind in kinds if (tick := self.latest.get(kind)) is not None]

    def _request(self) -> feed_pb2.SubscribeRequest:
        request = feed_pb2.SubscribeRequest(
            symbols=[self.symbol], snapshot=True, progress_updates=True
        )
        if self.epoch is not None:
            request.after.epoch = self.epoch
            request.after.offset = self.watermark
        return request

    async def _run(self) -> None:
        attempt = 0
        while True:
            call = self._stub.Subscribe(self._request())
            try:
                first = True
                while True:
                    # The feed heartbeats every second on a quiet stream: silence longer than
                    # stall_timeout means a dead (e.g. SIGSTOPped) feed or a black-holed link.
                    async with asyncio.timeout(self._stall_timeout):
                        response = await call.read()
                    if response is grpc.aio.EOF:
                        break
                    attempt = 0
                    self._handle(response, first)
                    first = False
                log.warning("upstream %s: stream ended by the feed; reconnecting", self.symbol)
            except TimeoutError:
                log.warning(
                    "upstream %s: no message for %.1fs; reconnecting",
                    self.symbol,
                    self._stall_timeout,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() in TERMINAL_CODES:
                    self._close(f"{error.code().name}: {error.details()}")
                    return
                log.warning(
                    "upstream %s: %s (%s); reconnecting",
                    self.symbol,
                    error.code().name,
                    error.details(),
                )
            finally:
                call.cancel()
            self.connected = False
            self._metrics.upstream_reconnects.inc()
            await asyncio.sleep(backoff_delay(attempt))
            attempt += 1

    def _handle(self, response: feed_pb2.SubscribeResponse, first: bool) -> None:
        kind = response.WhichOneof("event")
        if kind == "ticks":
            self._on_batch(response.ticks)
            self.ready.set()
        elif kind == "heartbeat":
            beat = response.heartbeat
            if first:
                self.connected = True
                if self.epoch is None:
                    # Ready once the snapshot batch that follows has filled ``latest``.
                    self.epoch, self.watermark = beat.epoch, beat.head_offset
                    log.info(
                        "upstream %s: subscribed at %s-%d", self.symbol, self.epoch, self.watermark
                    )
            elif beat.epoch == self.epoch and beat.head_offset > self.watermark:
                self._advance([], beat.head_offset)
        elif kind == "reset":
            reset = response.reset
            reason = feed_pb2.ResetReason.Name(reset.reason).removeprefix("RESET_REASON_").lower()
            log.warning("upstream %s: reset (%s): %s", self.symbol, reason, reset.message)
            self.epoch, self.watermark = reset.epoch, reset.head_offset
            self.latest.clear()
            for listener in list(self.listeners):
                listener.on_reset(self, reason, reset.message)

    def _on_batch(self, batch: feed_pb2.TickBatch) -> None:
        assert self.epoch is not None
        epoch, watermark = self.epoch, self.watermark
        live: list[EncodedTick] = []
        for tick in batch.ticks:
            encoded = encode_tick(tick, epoch)
            self.latest[encoded.kind] = encoded
            if tick.offset > watermark:
                live.append(encoded)
        self._advance(live, max(watermark, batch.head_offset))

    def _advance(self, live: list[EncodedTick], watermark: int) -> None:
        self.watermark = watermark
        for listener in list(self.listeners):
            listener.on_ticks(self, live)

    def _close(self, reason: str) -> None:
        log.warning("upstream %s: closed: %s", self.symbol, reason)
        self.closed_reason = reason
        self.ready.set()
        for listener in list(self.listeners):
            listener.on_closed(self, reason)


class UpstreamPool:
    """Opens a :class:`SymbolUpstream` on first interest and closes it ``linger`` seconds after
    its last listener leaves."""

    def __init__(
        self,
        stub: feed_pb2_grpc.FeedServiceStub,
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

    async def acquire(self, symbols: list[str], max_wait: float) -> list[SymbolUpstream]:
        """The ready upstreams of ``symbols``, opened if needed. Call :meth:`attach` next,
        without awaiting in between.

        Raises UpstreamUnavailable when one is not ready within ``max_wait`` seconds or was
        closed by the feed.
        """
        upstreams = [self._open(symbol) for symbol in symbols]
        for symbol in symbols:
            self._waiting[symbol] = self._waiting.get(symbol, 0) + 1
        try:
            async with asyncio.timeout(max_wait):
                for upstream in upstreams:
                    await upstream.ready.wait()
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

    def attach(self, listener: UpstreamListener, upstreams: list[SymbolUpstream]) -> None:
        for upstream in upstreams:
            upstream.listeners.add(listener)
            self._cancel_linger(upstream.symbol)

    def detach(self, listener: UpstreamListener, symbols: Iterable[str]) -> None:
        for symbol in symbols:
            upstream = self._upstreams.get(symbol)
            if upstream is not None:
                upstream.listeners.discard(listener)
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
