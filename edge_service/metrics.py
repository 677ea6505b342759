"""Prometheus metrics of the edge, in a registry of their own (one per app instance)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Seconds from feed ingest to edge send: 0.5 ms to 10 s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)


class _Queued(Protocol):
    @property
    def queued(self) -> int: ...


class _Upstream(Protocol):
    symbol: str
    last_tick_ns: int
    stale_frame: bytes | None


class EdgeMetrics:
    """Open SSE streams, upstream subscriptions, events sent, drops and disconnects by reason,
    resets, reconnects, queue depth and the feed-ingest-to-edge-send latency."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.open_streams = Gauge(
            "tickstream_edge_open_streams", "SSE streams open now.", registry=self.registry
        )
        self.upstreams = Gauge(
            "tickstream_edge_upstreams",
            "Shared upstream Subscribe streams (one per symbol) open now.",
            registry=self.registry,
        )
        self.upstream_reconnects = Counter(
            "tickstream_edge_upstream_reconnects",
            "Times an upstream stream was lost and retried.",
            registry=self.registry,
        )
        self.catchups = Counter(
            "tickstream_edge_catchups",
            "Private catch-up Subscribe streams opened for resuming clients.",
            registry=self.registry,
        )
        self.events_sent = Counter(
            "tickstream_edge_events_sent",
            "SSE events handed to clients' connections.",
            registry=self.registry,
        )
        self.client_writes = Counter(
            "tickstream_edge_client_writes",
            "Writes handed to clients' connections (each carries one or more events).",
            registry=self.registry,
        )
        self.conflated = Counter(
            "tickstream_edge_conflated_quotes",
            "Queued quotes replaced by a newer quote of the same symbol for a client behind.",
            registry=self.registry,
        )
        self.disconnects = Counter(
            "tickstream_edge_disconnects",
            "SSE streams ended by the edge, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.resets = Counter(
            "tickstream_edge_resets",
            "reset events sent to clients, by reason.",
            ["reason"],
            registry=self.registry,
        )
        # Known reasons start at 0, so a rate() over them works before the first occurrence.
        for reason in (
            "slow_consumer",
            "shutdown",
            "feed_unavailable",
            "symbol_unavailable",
            "token_expired",
        ):
            self.disconnects.labels(reason)
        for reason in (
            "epoch_changed",
            "offset_too_old",
            "offset_ahead",
            "malformed_cursor",
            "slow_consumer",
        ):
            self.resets.labels(reason)
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, fds, CPU
        self.tasks = Gauge(
            "tickstream_edge_asyncio_tasks",
            "asyncio tasks alive (scraped on the event loop).",
            registry=self.registry,
        )
        self.tasks.set_function(lambda: len(asyncio.all_tasks()))
        self.feed_ready = Gauge(
            "tickstream_edge_feed_ready",
            "1 when the feed answers its health check.",
            registry=self.registry,
        )
        self.delivery_latency = Histogram(
            "tickstream_edge_delivery_latency_seconds",
            "Feed ingest to edge send of the oldest tick in a write, sampled (one write in 8).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queued_events = Gauge(
            "tickstream_edge_queued_events",
            "Events queued to SSE streams and not yet written, all streams together.",
            registry=self.registry,
        )
        self.max_stream_queue = Gauge(
            "tickstream_edge_max_stream_queued_events",
            "Events queued to the most backed-up SSE stream.",
            registry=self.registry,
        )

    def watch_queues(self, outboxes: Callable[[], Iterable[_Queued]]) -> None:
        """Read queue depths from ``outboxes()`` (every open stream's) at each scrape."""
        self.queued_events.set_function(lambda: sum(s.queued for s in outboxes()))
        self.max_stream_queue.set_function(lambda: max((s.queued for s in outboxes()), default=0))

    def watch_upstreams(self, upstreams: Callable[[], Iterable[_Upstream]]) -> None:
        """Export, for every symbol with an upstream, the age of its last tick and whether the
        feed calls it stale (read at each scrape)."""
        self.registry.register(_SymbolAgeCollector(upstreams))


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
