"""Prometheus metrics of the edge, in a registry of their own (one per app instance)."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector


class EdgeMetrics:
    """Open SSE streams, upstream subscriptions, events sent, disconnects by reason, resets."""

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
            "tickstream_edge_events_sent", "SSE events queued to clients.", registry=self.registry
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
