"""Prometheus metrics of one service instance: a registry of its own (tests run several
instances in one process), the process collector (``process_*``: RSS, CPU, open files), and
metrics named under the service's prefix."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.registry import Collector


class ServiceMetrics:
    """The registry of one service instance; ``prefix`` starts every metric's name (e.g.
    ``tickstream_feed_``). Services subclass it and declare their metrics as attributes."""

    def __init__(self, prefix: str) -> None:
        self.registry = CollectorRegistry()
        self.prefix = prefix
        ProcessCollector(registry=self.registry)

    def counter(
        self,
        name: str,
        documentation: str,
        *,
        label: str | None = None,
        known: Iterable[str] = (),
    ) -> Counter:
        """The counter ``<prefix><name>`` (``..._total`` when scraped); with ``label``, a series
        per value, the ``known`` values exported at 0 from the start, so a rate() over them
        works before their first occurrence."""
        labels = [label] if label else []
        counter = Counter(self.prefix + name, documentation, labels, registry=self.registry)
        for value in known:
            counter.labels(value)
        return counter

    def gauge(self, name: str, documentation: str) -> Gauge:
        """The gauge ``<prefix><name>``."""
        return Gauge(self.prefix + name, documentation, registry=self.registry)

    def histogram(self, name: str, documentation: str, buckets: Sequence[float]) -> Histogram:
        """The histogram ``<prefix><name>`` with ``buckets`` (upper bounds, ascending)."""
        return Histogram(self.prefix + name, documentation, buckets=buckets, registry=self.registry)

    def register(self, collector: Collector) -> None:
        """Add ``collector`` (read at each scrape) to the registry."""
        self.registry.register(collector)
