"""Prometheus metrics of the edge, in a registry of their own (one per app instance)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client import Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tickstream_common.metrics import ServiceMetrics

from .feed_problems import CAUSES

# Seconds from feed ingest to edge send: 0.5 ms to 10 s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)


class _Queued(Protocol):
    @property
    def queued(self) -> int: ...


class _Upstream(Protocol):
    symbol: str
    last_tick_ns: int
    stale_frame: bytes | None


DISCONNECT_REASONS = (
    "slow_consumer",
    "shutdown",
    "feed_unavailable",
    "symbol_unavailable",
    "token_expired",
)
RESET_REASONS = (
    "epoch_changed",
    "offset_too_old",
    "offset_ahead",
    "malformed_cursor",
    "slow_consumer",
)


class EdgeMetrics(ServiceMetrics):
    """Open SSE streams, upstream subscriptions, events sent, drops and disconnects by reason,
    resets, reconnects, queue depth and the feed-ingest-to-edge-send latency."""

    def __init__(self) -> None:
        super().__init__("tickstream_edge_")
        self.open_streams = self.gauge("open_streams", "SSE streams open now.")
        self.upstreams = self.gauge(
            "upstreams", "Shared upstream Subscribe streams (one per symbol) open now."
        )
        self.upstream_reconnects = self.counter(
            "upstream_reconnects", "Times an upstream stream was lost and retried."
        )
        self.catchups = self.counter(
            "catchups", "Private catch-up Subscribe streams opened for resuming clients."
        )
        self.events_sent = self.counter("events_sent", "SSE events handed to clients' connections.")
        self.client_writes = self.counter(
            "client_writes",
            "Writes handed to clients' connections (each carries one or more events).",
        )
        self.conflated = self.counter(
            "conflated_quotes",
            "Queued quotes replaced by a newer quote of the same symbol for a client behind.",
        )
        self.disconnects = self.counter(
            "disconnects",
            "SSE streams ended by the edge, by reason.",
            label="reason",
            known=DISCONNECT_REASONS,
        )
        self.resets = self.counter(
            "resets",
            "reset events sent to clients, by reason.",
            label="reason",
            known=RESET_REASONS,
        )
        self.tasks = self.gauge("asyncio_tasks", "asyncio tasks alive (scraped on the event loop).")
        self.tasks.set_function(lambda: len(asyncio.all_tasks()))
        self.feed_ready = self.gauge("feed_ready", "1 when the feed answers its health check.")
        self.feed_problem = Gauge(
            self.prefix + "feed_problem",
            "1 for the reason the feed is not ready (unreachable, tls, protocol, "
            "unauthenticated, permission_denied, timeout, not_serving, unavailable), else 0.",
            ["cause"],
            registry=self.registry,
        )
        for cause in CAUSES:
            self.feed_problem.labels(cause).set(0)
        self.delivery_latency = self.histogram(
            "delivery_latency_seconds",
            "Feed ingest to edge send of the oldest tick in a write, sampled (one write in 8).",
            LATENCY_BUCKETS,
        )
        self.queued_events = self.gauge(
            "queued_events",
            "Events queued to SSE streams and not yet written, all streams together.",
        )
        self.max_stream_queue = self.gauge(
            "max_stream_queued_events", "Events queued to the most backed-up SSE stream."
        )

    def set_feed_problem(self, cause: str | None) -> None:
        """Mark ``cause`` (None: ready) as the reason the feed is not ready."""
        for known in CAUSES:
            self.feed_problem.labels(known).set(0)
        if cause is not None:
            self.feed_problem.labels(cause).set(1)

    def watch_queues(self, outboxes: Callable[[], Iterable[_Queued]]) -> None:
        """Read queue depths from ``outboxes()`` (every open stream's) at each scrape."""
        self.queued_events.set_function(lambda: sum(s.queued for s in outboxes()))
        self.max_stream_queue.set_function(lambda: max((s.queued for s in outboxes()), default=0))

    def watch_upstreams(self, upstreams: Callable[[], Iterable[_Upstream]]) -> None:
        """Export, for every symbol with an upstream, the age of its last tick and whether the
        feed calls it stale (read at each scrape)."""
        self.register(_SymbolAgeCollector(upstreams))


class _SymbolAgeCollector(Collector):
    def __init__(self, upstreams: Callable[[], Iterable[_Upstream]]) -> None:
        self._upstreams = upstreams

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ages = GaugeMetricFamily(
            "tickstream_edge_symbol_last_tick_age_seconds",
            "Seconds since the feed accepted the last tick this edge saw of the symbol "
            "(symbols with an open upstream).",
            labels=["symbol"],
        )
        stale = GaugeMetricFamily(
            "tickstream_edge_symbol_stale",
            "1 while the feed reports the symbol stale, else 0 (symbols with an open upstream).",
            labels=["symbol"],
        )
        now = time.time_ns()
        for upstream in list(self._upstreams()):
            if upstream.last_tick_ns:
                ages.add_metric([upstream.symbol], max(0.0, (now - upstream.last_tick_ns) / 1e9))
            stale.add_metric([upstream.symbol], 0.0 if upstream.stale_frame is None else 1.0)
        yield from (ages, stale)
