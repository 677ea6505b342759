"""Prometheus metrics of the feed, in a registry of their own (one per server instance)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from tickstream.v1 import feed_pb2

from .liveness import Liveness


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
        self.publish_batches = Counter(
            "tickstream_feed_publish_batches",
            "Publish batches by outcome: stored, invalid, denied, limited, unavailable.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("stored", "invalid", "denied", "limited", "unavailable"):
            self.publish_batches.labels(outcome)
        self.publish_duplicates = Counter(
            "tickstream_feed_publish_duplicates",
            "Published ticks not stored because their dedup_id was already stored.",
            registry=self.registry,
        )

    def watch(self, liveness: Liveness) -> None:
        """Export per-symbol last-tick ages and source states from ``liveness``."""
        self.registry.register(_LivenessCollector(liveness))


class _LivenessCollector(Collector):
    """Read at scrape time: seconds since each symbol's last tick, sources by state."""

    def __init__(self, liveness: Liveness) -> None:
        self._liveness = liveness

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ages = GaugeMetricFamily(
            "tickstream_feed_symbol_last_tick_age_seconds",
            "Seconds since the feed accepted the symbol's last tick.",
            labels=["symbol"],
        )
        stale = GaugeMetricFamily(
            "tickstream_feed_symbol_stale",
            "1 while the symbol is stale (no tick for its stale time), else 0.",
            labels=["symbol"],
        )
        liveness = self._liveness
        for symbol, age in list(liveness.ages()):
            ages.add_metric([symbol], age)
            stale.add_metric([symbol], 1.0 if liveness.is_stale(symbol) else 0.0)
        sources = GaugeMetricFamily(
            "tickstream_feed_sources",
            "Sources (built-in and producers) by state.",
            labels=["state"],
        )
        counts = dict.fromkeys(("connected", "flowing", "stale", "ended"), 0)
        for handle in list(liveness.sources.values()):
            name = feed_pb2.SourceState.Name(handle.state).removeprefix("SOURCE_STATE_").lower()
            counts[name] = counts.get(name, 0) + 1
        for state, count in counts.items():
            sources.add_metric([state], count)
        yield from (ages, stale, sources)
