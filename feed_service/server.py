"""Builds and runs the feed: gRPC server, health, reflection, metrics and the source task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server
from tickstream.v1 import feed_pb2, ingest_pb2

from .config import FeedSettings
from .errors import FeedError, NotReady
from .hub import TickHub
from .ingest import Ingestor, IngestResult
from .liveness import Liveness, SourceHandle
from .metrics import FeedMetrics
from .publish import IngestServicer, add_ingest_to_server
from .reflection import enable_reflection
from .security import RefusalLog, TokenInterceptor, TokenTable, server_credentials
from .servicer import FeedServicer, add_to_server
from .sources.base import TickSource
from .sources.replay import ReplaySource
from .sources.synthetic import SyntheticSource

log = logging.getLogger(__name__)

FEED_SERVICE_NAME = feed_pb2.DESCRIPTOR.services_by_name["FeedService"].full_name
INGEST_SERVICE_NAME = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name
BACKBONE_RETRY_S = 0.5  # a built-in source's pause while the backbone cannot store
SWEEP_INTERVAL_S = 0.25  # how often quiet symbols are checked for staleness
BAR_INTERVAL_S = 0.25  # how often open bars are checked for a due update
SERVER_OPTIONS = [
    # One feed per port: without this gRPC sets SO_REUSEPORT and a second feed would share it.
    ("grpc.so_reuseport", 0),
    # Accept client keepalive pings every 10 s or more, also on streams with no data.
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]


def build_source(settings: FeedSettings, metrics: FeedMetrics) -> TickSource | None:
    """The source named by ``settings.source``; None for ``none`` (producers only).
    Raises ValueError for replay with no path."""
    if settings.source == "none":
        return None
    if settings.source == "replay":
        if not settings.replay_path:
            raise ValueError("--source replay needs at least one --replay-path")
        return ReplaySource(settings.replay_path, settings.speed, settings.loop)
    if settings.source == "binance":
        from .sources.binance import BinanceSource

        if "symbols" not in settings.model_fields_set:
            raise ValueError("--source binance needs --symbols, e.g. --symbols BTCUSDT,ETHUSDT")

        return BinanceSource(
            settings.symbols,
            settings.binance_url,
            rest_url=settings.binance_rest_url,
            depth=settings.binance_depth,
            on_book_gap=metrics.book_gaps.inc,
        )
    return SyntheticSource(settings.symbols, settings.seed, settings.rate)


def build_hub(settings: FeedSettings, liveness: Liveness, metrics: FeedMetrics) -> TickHub:
    """The backbone named by ``settings.backbone``: the in-process hub, or JetStream."""
    if settings.backbone == "memory":
        return TickHub(settings.history_size, liveness=liveness)
    from .jetstream import JetStreamHub

    return JetStreamHub(
        settings.nats_url,
        settings.nats_stream,
        settings.history_size,
        history_age_s=settings.history_age,
        replicas=settings.nats_replicas,
        liveness=liveness,
        on_retry=lambda cause: metrics.backbone_retries.labels(cause).inc(),
    )


class FeedServer:
    """One feed process: ``start()`` binds and begins loading; ``stop()`` drains."""

    def __init__(self, settings: FeedSettings, source: TickSource | None = None) -> None:
        self.settings = settings
        self.metrics = FeedMetrics()
        self.liveness = Liveness(settings.stale_after, dict(settings.stale_after_symbol))
        self.metrics.watch(self.liveness)
        self.hub = build_hub(settings, self.liveness, self.metrics)
        self.hub.on_link = self._backbone_link
        self.ingestor = Ingestor(
            self.hub, settings.dedup_window, settings.max_symbols, settings.bar_intervals
        )
        if settings.backbone == "nats" and settings.dedup_window:
            from .jetstream import JetStreamHub

            assert isinstance(self.hub, JetStreamHub)
            self.hub.dedup = self.ingestor.dedup  # filled from the stream too, see there
        self.source = source or build_source(settings, self.metrics)
        self.servicer = FeedServicer(
            self.hub, self.metrics, settings.heartbeat_interval, self.liveness
        )
        self.health = health.aio.HealthServicer()
        self.credentials = server_credentials(settings)
        tokens = TokenTable.from_file(settings.client_tokens) if settings.client_tokens else None
        self.servicer.tokens = tokens
        self.servicer.bar_intervals = settings.bar_intervals
        self.ingest = IngestServicer(
            self.hub, self.ingestor, self.liveness, self.metrics, settings.max_batch, tokens
        )
        self.refusals = RefusalLog(lambda cause: self.metrics.refused_clients.labels(cause).inc())
        self.server = grpc.aio.server(
            options=SERVER_OPTIONS,
            interceptors=None if tokens is None else [TokenInterceptor(tokens, self.refusals)],
        )
        add_to_server(self.servicer, self.server)
        add_ingest_to_server(self.ingest, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        enable_reflection(
            (FEED_SERVICE_NAME, INGEST_SERVICE_NAME, health.SERVICE_NAME), self.server
        )
        self.port = 0
        self.metrics_port: int | None = None
        self._source_task: asyncio.Task[None] | None = None
        self._sampler: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._bar_task: asyncio.Task[None] | None = None
        self.failure: str | None = None  # why the feed stopped on its own, if it did
        self.failed = asyncio.Event()

    async def start(self) -> None:
        """Bind the port (logging the address) and start loading and publishing the source."""
        host = self.settings.host
        shown_host = f"[{host}]" if ":" in host else host
        if self.settings.metrics:
            try:
                httpd, _ = start_http_server(
                    self.settings.metrics_port, addr=host, registry=self.metrics.registry
                )
            except OSError as error:
                port = self.settings.metrics_port
                raise OSError(
                    f"cannot serve metrics on port {port}: {error} (choose another with "
                    "--metrics-port, or --no-metrics)"
                ) from None
            self.metrics_port = httpd.server_port
        address = f"{shown_host}:{self.settings.port}"
        try:
            if self.credentials is not None:
                self.port = self.server.add_secure_port(address, self.credentials)
            else:
                self.port = self.server.add_insecure_port(address)
        except RuntimeError:
            raise OSError(f"cannot bind {address}: address in use or not available") from None
        for service in ("", FEED_SERVICE_NAME, INGEST_SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        log.info(
            "feed_service listening on %s:%d (backbone %s)",
            shown_host,
            self.port,
            self.settings.backbone,
        )
        if self.metrics_port is not None:
            log.info("feed_service metrics on http://%s:%d/metrics", shown_host, self.metrics_port)
        self._source_task = asyncio.create_task(self._run_source(), name="feed-source")
        self._sampler = asyncio.create_task(self._sample(), name="feed-sampler")
        self._sweeper = asyncio.create_task(self._sweep(), name="feed-staleness")
        self._bar_task = asyncio.create_task(self._publish_bars(), name="feed-bars")

    async def _sample(self) -> None:
        """Gauges that must be read on the event loop (metrics are served from a thread)."""
        while True:
            self.metrics.tasks.set(len(asyncio.all_tasks()))
            await asyncio.sleep(1.0)

    async def _sweep(self) -> None:
        """Mark quiet symbols and sources stale; wake streams when a symbol's state changed."""
        liveness = self.liveness
        while True:
            seen = liveness.version
            liveness.sweep()
            if liveness.version != seen:
                self.hub.wake_waiters()
            await asyncio.sleep(SWEEP_INTERVAL_S)

    async def _publish_bars(self) -> None:
        """The open bars' due updates, four times a second (see ``bars``)."""
        while True:
            await asyncio.sleep(BAR_INTERVAL_S)
            if self.hub.ready:
                with contextlib.suppress(NotReady):  # still due at the next round
                    await self.ingestor.publish_due_bars()

    async def _ready(self, detail: str) -> None:
        self.hub.ready = True
        for service in ("", FEED_SERVICE_NAME, INGEST_SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("feed ready: %s, epoch %s, health SERVING", detail, self.hub.epoch)

    async def _backbone_link(self, up: bool) -> None:
        """A replica cut off from NATS is not serving (its cache stops advancing), so edges move
        to another replica at their position; it serves again once reconnected."""
        if not self.hub.ready or self.servicer.closing:
            return
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if up
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", FEED_SERVICE_NAME, INGEST_SERVICE_NAME):
            await self.health.set(service, status)
        log.warning(
            "feed health %s: backbone %s",
            "SERVING" if up else "NOT_SERVING",
            "back" if up else "lost",
        )

    async def _run_source(self) -> None:
        """Join the backbone, load the built-in source, then store its batches through the
        ingest path."""
        await self.hub.start()
        source = self.source
        if source is None:
            await self._ready("no built-in source, producers only")
            return
        try:
            infos = await source.load()
        except Exception as error:  # a missing or empty recording: the feed cannot do its job
            self.failure = f"the {source.name} source failed to load: {error}"
            log.error("%s; stopping", self.failure)
            self.failed.set()
            return
        await self.hub.declare(infos)
        self.metrics.book_gaps.inc(len(getattr(source, "book_breaks", ())))
        handle = self.liveness.source(source.name)
        await self._ready(f"source {source.name}, {len(infos)} symbols")
        metrics = self.metrics
        try:
            async for batch in source.batches(handle):
                result = await self._ingest_source_batch(batch, handle)
                if result is not None:
                    metrics.ticks_published.inc(result.accepted)
                    metrics.head_offset.set(result.last_offset)
        except Exception as error:  # a bug: stop loudly (a supervisor restarts the feed)
            self.failure = f"the {source.name} source failed: {error!r}"
            log.exception("%s; stopping", self.failure)
            self.failed.set()

    async def _ingest_source_batch(
        self, batch: list[ingest_pb2.TickDraft], handle: SourceHandle
    ) -> IngestResult | None:
        """Store a built-in source's batch; a bad tick is logged and the batch skipped, and a
        backbone that cannot store now is waited for (the source pauses, nothing is skipped)."""
        while True:
            try:
                return await self.ingestor.ingest(batch, handle)
            except NotReady as error:
                log.warning("source %s: waiting for the backbone: %s", handle.name, error)
                await asyncio.sleep(BACKBONE_RETRY_S)
            except FeedError as error:  # a source's bad tick: log it, keep the source running
                log.warning("source %s: batch of %d refused: %s", handle.name, len(batch), error)
                return None

    async def stop(self) -> None:
        """Drain: NOT_SERVING, end every stream with UNAVAILABLE, stop within the grace period."""
        log.info("feed_service draining (grace %.1fs)", self.settings.grace_period)
        await self.health.enter_graceful_shutdown()
        self.servicer.closing = True
        self.ingest.closing = True
        self.hub.wake_waiters()
        for task in (self._sampler, self._sweeper, self._bar_task):
            if task is not None:
                task.cancel()
        if self._source_task is not None:
            self._source_task.cancel()  # bounded: a NATS client mid-connect may linger
            await asyncio.wait([self._source_task], timeout=self.settings.grace_period)
        await self.server.stop(self.settings.grace_period)
        await self.hub.close()
        log.info("feed_service stopped")


async def serve(settings: FeedSettings) -> None:
    """Run a feed until SIGTERM or SIGINT, then drain. Raises ValueError (exit status 2, one
    line) when its built-in source fails to load or fails later."""
    feed = FeedServer(settings)
    await feed.start()
    stop = feed.failed
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await feed.stop()
    if feed.failure is not None:
        raise ValueError(feed.failure)
