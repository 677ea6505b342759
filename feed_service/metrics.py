"""Prometheus metrics of the feed, in a registry of their own (one per server instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from tickstream.v1 import feed_pb2


class FeedMetrics:
    """Counters and gauges: subscriptions, ticks published and sent, head offset."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.subscribe_requests = Counter(
            "tickstream_feed_subscribe_requests",
            "Subscribe calls accepted (after validation).",
            registry=self.registry,
        )
        self.rejected_requests = Counter(
            "tickstream_feed_rejected_requests",
            "Subscribe calls rejected, by gRPC status code.",
            ["code"],
            registry=self.registry,
        )
        self.active_subscriptions = Gauge(
            "tickstream_feed_active_subscriptions",
            "Subscribe streams open now.",
            registry=self.registry,
        )
        self.ticks_published = Counter(
            "tickstream_feed_ticks_published", "Ticks numbered by the hub.", registry=self.registry
        )
        self.ticks_sent = Counter(
            "tickstream_feed_ticks_sent",
            "Ticks written to Subscribe streams.",
            registry=self.registry,
        )
        self.resets = Counter(
            "tickstream_feed_resets",
            "Reset messages sent, by reason.",
            ["reason"],
            registry=self.registry,
        )
        # Known label values start at 0, so rate() works before the first occurrence.
        for code in ("INVALID_ARGUMENT", "NOT_FOUND", "UNAVAILABLE", "PERMISSION_DENIED"):
            self.rejected_requests.labels(code)
        for name, number in feed_pb2.ResetReason.items():
            if number:
                self.resets.labels(name)
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, fds, CPU
        self.tasks = Gauge(
            "tickstream_feed_asyncio_tasks",
            "asyncio tasks alive (sampled every second on the event loop).",
            registry=self.registry,
        )
        self.head_offset = Gauge(
            "tickstream_feed_head_offset", "Newest offset assigned.", registry=self.registry
        )
