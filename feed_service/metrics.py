"""Prometheus metrics of the feed, in a registry of their own (one per server instance)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from tickstream.v1 import feed_pb2

from tickstream_common.metrics import ServiceMetrics

from .liveness import Liveness
from .security import REFUSALS

REJECT_CODES = ("INVALID_ARGUMENT", "NOT_FOUND", "UNAVAILABLE", "PERMISSION_DENIED")
RESET_REASONS = tuple(name for name, number in feed_pb2.ResetReason.items() if number)
PUBLISH_OUTCOMES = ("stored", "invalid", "denied", "limited", "unavailable")


class FeedMetrics(ServiceMetrics):
    """Counters and gauges: subscriptions, ticks published and sent, head offset."""

    def __init__(self) -> None:
        super().__init__("tickstream_feed_")
        self.subscribe_requests = self.counter(
            "subscribe_requests", "Subscribe calls accepted (after validation)."
        )
        self.rejected_requests = self.counter(
            "rejected_requests",
            "Subscribe calls rejected, by gRPC status code.",
            label="code",
            known=REJECT_CODES,
        )
        self.active_subscriptions = self.gauge(
            "active_subscriptions", "Subscribe streams open now."
        )
        self.ticks_published = self.counter("ticks_published", "Ticks numbered by the hub.")
        self.ticks_sent = self.counter("ticks_sent", "Ticks written to Subscribe streams.")
        self.resets = self.counter(
            "resets", "Reset messages sent, by reason.", label="reason", known=RESET_REASONS
        )
        self.tasks = self.gauge(
            "asyncio_tasks", "asyncio tasks alive (sampled every second on the event loop)."
        )
        self.head_offset = self.gauge("head_offset", "Newest offset assigned.")
        self.publish_batches = self.counter(
            "publish_batches",
            "Publish batches by outcome: stored, invalid, denied, limited, unavailable.",
            label="outcome",
            known=PUBLISH_OUTCOMES,
        )
        self.publish_duplicates = self.counter(
            "publish_duplicates",
            "Published ticks not stored because their dedup_id was already stored.",
        )
        self.book_gaps = self.counter(
            "book_gaps",
            "Breaks of a book's update-id chain in a source's depth data: the book is not "
            "published from the break until the next depth snapshot (each one also logged).",
        )
        self.backbone_retries = self.counter(
            "backbone_retries",
            "Batches the JetStream backbone sent again, by cause: conflict (another replica "
            "wrote one of its symbols first), unsure (the acknowledgement was lost), error.",
            label="cause",
            known=("conflict", "unsure", "error"),
        )
        self.refused_clients = self.counter(
            "refused_calls",
            "Calls refused before any method ran, by cause: no_token, unknown_token (each "
            "client address and cause is also logged once).",
            label="cause",
            known=tuple(REFUSALS),
        )

    def watch(self, liveness: Liveness) -> None:
        """Export per-symbol last-tick ages and source states from ``liveness``."""
        self.register(_LivenessCollector(liveness))


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
