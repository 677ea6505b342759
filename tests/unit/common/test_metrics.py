"""A service's metrics: its own registry, names under its prefix, known labels from 0."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tickstream_common.metrics import ServiceMetrics


class _Fixed(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("demo_fixed", "A constant.", value=7)


def scrape(metrics: ServiceMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_names_carry_the_prefix_and_known_labels_start_at_zero() -> None:
    metrics = ServiceMetrics("demo_")
    metrics.counter("sent", "Things sent.").inc(3)
    metrics.counter("dropped", "Things dropped, by why.", label="why", known=("full", "slow"))
    metrics.gauge("open", "Open now.").set(2)
    metrics.histogram("latency_seconds", "Latency.", (0.1, 1.0)).observe(0.5)
    text = scrape(metrics)
    assert "demo_sent_total 3.0" in text and "demo_open 2.0" in text
    assert 'demo_dropped_total{why="full"} 0.0' in text
    assert 'demo_dropped_total{why="slow"} 0.0' in text
    assert 'demo_latency_seconds_bucket{le="1.0"} 1.0' in text


def test_each_instance_has_its_own_registry_with_the_process_collector() -> None:
    first, second = ServiceMetrics("demo_"), ServiceMetrics("demo_")
    first.gauge("open", "Open now.").set(1)
    second.gauge("open", "Open now.")  # the same name again: no clash across instances
    assert "demo_open 1.0" in scrape(first) and "demo_open 0.0" in scrape(second)
    assert "process_cpu_seconds_total" in scrape(first)


def test_registered_collectors_are_read_at_scrape() -> None:
    metrics = ServiceMetrics("demo_")
    metrics.register(_Fixed())
    assert "demo_fixed 7.0" in scrape(metrics)
