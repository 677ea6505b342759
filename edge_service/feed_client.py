"""The edge's connection to the feed: a gRPC channel per feed replica, readiness, fail-over and the
symbol list."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tickstream.v1 import feed_pb2, feed_pb2_grpc

from .feed_problems import cause_of
from .metrics import EdgeMetrics

log = logging.getLogger(__name__)

CHANNEL_OPTIONS = [
    # Detect a silently dead feed: ping every 10 s, give up 5 s after an unanswered ping.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Come back quickly after the feed restarts.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]
SYMBOLS_REFRESH_S = 10.0


class Replica:
    """One feed address: an asyncio channel (health, symbols, resume catch-ups) and a blocking
    twin for the upstream reader threads (see upstream.SymbolUpstream)."""

    def __init__(
        self, target: str, credentials: grpc.ChannelCredentials | None, token: str | None
    ) -> None:
        self.target = target
        aio_interceptors: list[grpc.aio.ClientInterceptor] | None = (
            [_AioUnaryToken(token), _AioStreamToken(token)] if token else None
        )
        if credentials is not None:
            self.channel = grpc.aio.secure_channel(
                target, credentials, options=CHANNEL_OPTIONS, interceptors=aio_interceptors
            )
            self.sync_channel = grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
        else:
            self.channel = grpc.aio.insecure_channel(
                target, options=CHANNEL_OPTIONS, interceptors=aio_interceptors
            )
            self.sync_channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.stub = feed_pb2_grpc.FeedServiceStub(self.channel)
        sync: grpc.Channel = self.sync_channel
        if token:
            sync = grpc.intercept_channel(sync, _SyncToken(token))
        self.sync_stub = feed_pb2_grpc.FeedServiceStub(sync)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    async def close(self) -> None:
        await self.channel.close(grace=None)
        self.sync_channel.close()


class FeedClient:
    """Owns a channel per feed replica; a background task polls the gRPC health of the one in
    use and moves to the next that answers SERVING when it stops answering.

    ``target`` is one address or several, comma-separated (feed replicas). ``ready`` is True
    while the replica in use answers SERVING; ``symbols`` maps each symbol it serves to its
    ``SymbolInfo`` (refreshed on readiness and every 10 s). ``stub`` and ``sync_stub`` are the
    replica in use's: callers take them anew for each call.
    """

    def __init__(
        self,
        target: str,
        metrics: EdgeMetrics,
        check_interval: float,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
    ) -> None:
        """``credentials``: TLS to the feed (None: plaintext); ``token``: sent as
        ``authorization: Bearer <token>`` metadata on every FeedService call. Raises ValueError
        when ``target`` names no address."""
        targets = [t.strip() for t in target.split(",") if t.strip()]
        if not targets:
            raise ValueError("--feed-target names no address")
        self.replicas = [Replica(t, credentials, token) for t in targets]
        self._current = 0
        self._metrics = metrics
        self._interval = check_interval
        self.ready = False
        self.problem: str | None = None  # why the replica in use is not ready (feed_problems)
        self.epoch: str | None = None
        self.symbols: dict[str, feed_pb2.SymbolInfo] = {}
        self.bar_intervals: list[str] = []  # the bars the feed makes (ListSymbols)
        self.sources: list[feed_pb2.SourceInfo] = []
        self._task: asyncio.Task[None] | None = None
        self._symbols_at = 0.0
        self._refreshing: asyncio.Task[None] | None = None
        self._refreshes_started = 0

    @property
    def replica(self) -> Replica:
        """The replica in use."""
        return self.replicas[self._current]

    @property
    def target(self) -> str:
        return self.replica.target

    @property
    def stub(self) -> feed_pb2_grpc.FeedServiceStub:
        return self.replica.stub

    @property
    def sync_stub(self) -> feed_pb2_grpc.FeedServiceStub:
        return self.replica.sync_stub

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="feed-health")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for replica in self.replicas:
            await replica.close()

    async def check(self) -> bool:
        """One health check (and symbol refresh when due); returns and records readiness.
        When the replica in use does not answer SERVING, the others are tried in turn and the
        first that does is used from then on."""
        ready = await self._check(self.replica)
        if not ready and len(self.replicas) > 1:
            ready = await self._fail_over()
        if ready and not self.ready:
            log.info("feed %s ready (epoch %s)", self.target, self.epoch)
        self.ready = ready
        self._metrics.feed_ready.set(1 if ready else 0)
        return ready

    async def _check(self, replica: Replica) -> bool:
        loop = asyncio.get_running_loop()
        try:
            reply = await replica.health.Check(
                health_pb2.HealthCheckRequest(), timeout=max(1.0, self._interval * 2)
            )
            ready = reply.status == health_pb2.HealthCheckResponse.SERVING
            if ready and (not self.ready or loop.time() - self._symbols_at > SYMBOLS_REFRESH_S):
                await self.refresh_symbols()
            if ready:
                await self._refresh_sources()
            cause, detail = (None, "") if ready else ("not_serving", "health NOT_SERVING")
        except grpc.aio.AioRpcError as error:
            ready, cause, detail = False, cause_of(error), error.details() or ""
        if replica is self.replica:
            self._note_problem(cause, detail)
        return ready

    def _note_problem(self, cause: str | None, detail: str) -> None:
        """Record why the replica in use is not ready; log it once per change of cause."""
        if cause == self.problem:
            return
        if cause is not None:
            # A feed still loading when the edge starts (make run, compose) is expected, not a
            # fault: said at INFO until the feed has been ready once.
            starting = cause == "not_serving" and self.epoch is None
            level = logging.INFO if starting else logging.WARNING
            log.log(level, "feed %s not ready: %s (%s)", self.target, cause, detail[:300])
        self.problem = cause
        self._metrics.set_feed_problem(cause)

    async def _fail_over(self) -> bool:
        """Move to the next replica that answers SERVING; False when none does."""
        count = len(self.replicas)
        for step in range(1, count):
            index = (self._current + step) % count
            previous, self._current = self._current, index
            if await self._check(self.replicas[index]):
                log.warning(
                    "feed %s not answering: using %s",
                    self.replicas[previous].target,
                    self.target,
                )
                return True
            self._current = previous
        return False

    async def refresh_symbols(self) -> None:
        """Reload the symbol list. Raises grpc.aio.AioRpcError when the feed does not answer."""
        reply = await self.stub.ListSymbols(feed_pb2.ListSymbolsRequest(), timeout=2.0)
        self.symbols = {info.symbol: info for info in reply.symbols}
        self.epoch = reply.epoch
        self.bar_intervals = list(reply.bar_intervals)
        self._symbols_at = asyncio.get_running_loop().time()

    async def refresh_now(self) -> None:
        """Reload the symbol list through a ListSymbols call begun after this call was: a
        symbol published just before is in it. Concurrent callers share calls, so there is at
        most one in flight; errors leave the list as it was."""
        needed = self._refreshes_started + 1
        while True:
            task = self._refreshing
            if task is None or task.done():
                self._refreshes_started += 1
                task = self._refreshing = asyncio.create_task(
                    self.refresh_symbols(), name="symbols"
                )
            started = self._refreshes_started
            with contextlib.suppress(grpc.aio.AioRpcError):
                await asyncio.shield(task)
            if started >= needed:
                return

    async def lookup(self, symbols: list[str]) -> None:
        """Ask the feed about ``symbols`` it was not known to serve (producers add symbols at
        any time) and add those it serves. Errors leave the list as it was."""
        request = feed_pb2.ListSymbolsRequest(symbols=symbols)
        with contextlib.suppress(grpc.aio.AioRpcError):
            reply = await self.stub.ListSymbols(request, timeout=2.0)
            self.symbols.update((info.symbol, info) for info in reply.symbols)

    async def _refresh_sources(self) -> None:
        """Reload the feed's sources and their states (a feed without ListSources: none)."""
        try:
            reply = await self.stub.ListSources(feed_pb2.ListSourcesRequest(), timeout=2.0)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            self.sources = []
            return
        self.sources = list(reply.sources)

    async def _watch(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self._interval)


def channel_credentials(
    ca: Path | None, cert: Path | None, key: Path | None
) -> grpc.ChannelCredentials | None:
    """TLS credentials for the feed channel: trust ``ca`` (PEM; None: the system roots) and
    present ``cert``/``key`` when given (mutual TLS). None when none of them is set (plaintext).
    Raises ValueError when only one of cert and key is set."""
    if not (ca or cert or key):
        return None
    if bool(cert) != bool(key):
        raise ValueError("a client certificate needs both --feed-tls-cert and --feed-tls-key")
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes() if ca else None,
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


def _with_token(metadata: Any, token: str) -> list[tuple[str, str]]:
    return [*(metadata or ()), ("authorization", f"Bearer {token}")]


class _AioToken:
    """Adds the bearer token to the details of an aio call."""

    def __init__(self, token: str) -> None:
        self._token = token

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*_with_token(details.metadata, self._token)),
            details.credentials,
            details.wait_for_ready,
        )


class _AioUnaryToken(_AioToken, grpc.aio.UnaryUnaryClientInterceptor):
    """The token on unary calls (health checks, ListSymbols, ListSources)."""

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AioStreamToken(_AioToken, grpc.aio.UnaryStreamClientInterceptor):
    """The token on Subscribe (the resume catch-up streams). A separate class: grpc-aio files
    each interceptor under the first call kind it implements only, so one class doing both
    left the catch-up Subscribe without a token (UNAUTHENTICATED, resume never worked)."""

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


@dataclass(frozen=True)
class _SyncDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _SyncToken(grpc.UnaryStreamClientInterceptor, grpc.UnaryUnaryClientInterceptor):
    """Adds the bearer token to every call of a blocking channel."""

    def __init__(self, token: str) -> None:
        self._token = token

    def _details(self, details: Any) -> _SyncDetails:
        return _SyncDetails(
            details.method,
            details.timeout,
            _with_token(details.metadata, self._token),
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)
