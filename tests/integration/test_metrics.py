"""Operators' metrics (issue 5): every series the README lists is exposed, and the latency
histogram and queue-depth gauges carry real readings while ticks flow."""

from __future__ import annotations

import asyncio
import re

import httpx

from tests.conftest import Stack
from tests.support import SseEvent, collect, follow

EDGE_SERIES = (
    "tickstream_edge_open_streams",
    "tickstream_edge_upstreams",
    "tickstream_edge_upstream_reconnects_total",
    "tickstream_edge_catchups_total",
    "tickstream_edge_events_sent_total",
    "tickstream_edge_conflated_quotes_total",
    "tickstream_edge_disconnects_total",
    "tickstream_edge_resets_total",
    "tickstream_edge_queued_events",
    "tickstream_edge_max_stream_queued_events",
    "tickstream_edge_delivery_latency_seconds_bucket",
    "tickstream_edge_feed_ready",
    "tickstream_edge_asyncio_tasks",
    "process_resident_memory_bytes",
)
FEED_SERIES = (
    "tickstream_feed_subscribe_requests_total",
    "tickstream_feed_rejected_requests_total",
    "tickstream_feed_active_subscriptions",
    "tickstream_feed_ticks_published_total",
    "tickstream_feed_ticks_sent_total",
    "tickstream_feed_resets_total",
    "tickstream_feed_head_offset",
)


def samples(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of every sample of ``name`` in Prometheus text ``text``."""
    found = {}
    for match in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.M):
        found[match.group(1) or ""] = float(match.group(2))
    return found


async def test_edge_and_feed_expose_the_documented_series_with_live_readings(
    live_stack: Stack,
) -> None:
    events: list[SseEvent] = []
    stop = asyncio.Event()
    reader = asyncio.create_task(follow(f"{live_stack.base_url}/sse/BTCUSDT", events, stop))
    async with httpx.AsyncClient(timeout=10) as http:
        async with asyncio.timeout(60):
            while True:
                await asyncio.sleep(0.5)
                text = (await http.get(f"{live_stack.base_url}/metrics")).text
                count = samples(text, "tickstream_edge_delivery_latency_seconds_count")
                if len(events) >= 50 and count.get("", 0) >= 3:
                    break
        stop.set()
        await asyncio.wait_for(reader, 30)
        # Replayed history is not delivery latency: 4,000 events (some 16 writes, so samples
        # are taken) from the oldest tick.
        await asyncio.sleep(3)  # every retained tick is now over 3 s old
        await collect(http, f"{live_stack.base_url}/sse/BTCUSDT?last_event_id=earliest", 4000)
        text = (await http.get(f"{live_stack.base_url}/metrics")).text
        feed_text = (
            await http.get(f"http://127.0.0.1:{live_stack.feed.metrics_port}/metrics")
        ).text
    for name in EDGE_SERIES:
        assert samples(text, name), f"{name} missing from the edge's /metrics"
    for name in FEED_SERIES:
        assert name in feed_text, f"{name} missing from the feed's metrics port"
    buckets = samples(text, "tickstream_edge_delivery_latency_seconds_bucket")
    assert buckets['{le="+Inf"}'] >= 3
    # Replayed ticks reach the edge's send within a second of their ingest, on loopback.
    assert buckets['{le="1.0"}'] == buckets['{le="+Inf"}']
    assert samples(text, "tickstream_edge_queued_events")[""] >= 0
    assert samples(text, "tickstream_edge_events_sent_total")[""] >= 50
    resets = samples(feed_text, "tickstream_feed_resets_total")
    assert '{reason="RESET_REASON_SLOW_CONSUMER"}' in resets, "known reasons start at 0"
