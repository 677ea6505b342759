"""Resources come back: clients that leave (closed or reset) free their streams, upstreams close
after the linger, and 10,000 short-lived subscriptions leave no growth in tasks or memory
(issue 3, behaviours 4 and 7)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator

import grpc
import httpx
import pytest
from tickstream.v1 import feed_pb2, feed_pb2_grpc

from tests.conftest import Stack, running_stack
from tests.support import ServiceProcess, collect

SHORT_LIVED = 10_000
CONCURRENCY = 50
TASK_SLACK = 5  # tasks: the count after may differ from before by timers and pollers
RSS_SLACK_MB = 25  # RSS: allocator arenas and caches may grow a little, leaks grow with N


def scrape(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))


def feed_value(feed: ServiceProcess, name: str) -> float:
    assert feed.metrics_port is not None
    return scrape(feed.metrics_port, name)


async def settle(check: object, within: float = 20) -> None:
    async with asyncio.timeout(within):
        while not check():  # type: ignore[operator]  # noqa: ASYNC110 - polling gauges
            await asyncio.sleep(0.2)


@pytest.fixture
def stack() -> Iterator[Stack]:
    yield from running_stack(["--symbols", "AAA,BBB", "--rate", "200"], ("--upstream-linger", "1"))


async def test_departed_clients_free_streams_upstreams_and_feed_subscriptions(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    port = stack.edge.port
    paths = ["/sse/AAA", "/sse?symbols=AAA,BBB&snapshot=true"] * 10
    await asyncio.gather(*(collect(http, stack.base_url + p, 3) for p in paths))
    # Two more that vanish abruptly: the socket is reset (RST), no orderly close.
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /sse/BBB HTTP/1.1\r\nHost: t\r\n\r\n")
        sock.recv(4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    await settle(lambda: scrape(port, "tickstream_edge_open_streams") == 0)
    await settle(lambda: scrape(port, "tickstream_edge_upstreams") == 0)
    await settle(lambda: feed_value(stack.feed, "tickstream_feed_active_subscriptions") == 0)


async def _short_lived_sse(http: httpx.AsyncClient, url: str, count: int) -> None:
    for _ in range(count):
        async with http.stream("GET", url) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    break


@pytest.mark.timeout(300)
async def test_ten_thousand_short_lived_sse_streams_leave_no_growth(stack: Stack) -> None:
    port = stack.edge.port
    url = f"{stack.base_url}/sse/AAA?snapshot=true"
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        await asyncio.gather(*(_short_lived_sse(http, url, 10) for _ in range(CONCURRENCY)))
        await settle(lambda: scrape(port, "tickstream_edge_open_streams") == 0)
        tasks_before = scrape(port, "tickstream_edge_asyncio_tasks")
        rss_before = scrape(port, "process_resident_memory_bytes")
        per_client = SHORT_LIVED // CONCURRENCY
        await asyncio.gather(*(_short_lived_sse(http, url, per_client) for _ in range(CONCURRENCY)))
    await settle(lambda: scrape(port, "tickstream_edge_open_streams") == 0)
    assert scrape(port, "tickstream_edge_asyncio_tasks") <= tasks_before + TASK_SLACK
    growth_mb = (scrape(port, "process_resident_memory_bytes") - rss_before) / 2**20
    print(f"edge RSS growth after {SHORT_LIVED} streams: {growth_mb:.1f} MiB")
    assert growth_mb < RSS_SLACK_MB


@pytest.mark.timeout(300)
async def test_ten_thousand_short_lived_feed_subscriptions_leave_no_growth(stack: Stack) -> None:
    feed = stack.feed
    async with grpc.aio.insecure_channel(f"127.0.0.1:{feed.port}") as channel:
        stub = feed_pb2_grpc.FeedServiceStub(channel)

        async def short_lived(count: int) -> None:
            for _ in range(count):
                call = stub.Subscribe(feed_pb2.SubscribeRequest(symbols=["AAA"]))
                await call.read()
                call.cancel()

        await asyncio.gather(*(short_lived(10) for _ in range(CONCURRENCY)))
        await settle(lambda: feed_value(feed, "tickstream_feed_active_subscriptions") == 0)
        await asyncio.sleep(1.5)  # the task gauge is sampled every second
        tasks_before = feed_value(feed, "tickstream_feed_asyncio_tasks")
        rss_before = feed_value(feed, "process_resident_memory_bytes")
        await asyncio.gather(*(short_lived(SHORT_LIVED // CONCURRENCY) for _ in range(CONCURRENCY)))
    await settle(lambda: feed_value(feed, "tickstream_feed_active_subscriptions") == 0)
    await asyncio.sleep(1.5)
    assert feed_value(feed, "tickstream_feed_asyncio_tasks") <= tasks_before + TASK_SLACK
    growth_mb = (feed_value(feed, "process_resident_memory_bytes") - rss_before) / 2**20
    print(f"feed RSS growth after {SHORT_LIVED} subscriptions: {growth_mb:.1f} MiB")
    assert growth_mb < RSS_SLACK_MB
