"""The cluster as browsers see it (issue 12): a three-node NATS cluster (stream replicas = 3),
two feed replicas on it (B replays the bundled data in real time), two edges each given both
replicas in opposite order, and SSE clients. Feed replicas die and restart, one by one and all
at once: every client's stream goes on with no gap, no repeat and no ``reset``, because every
replica serves the same offsets in the same epoch."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from scripts.run_cluster import nginx_command
from tests.conftest import nats_args
from tests.support import (
    BTC_FILE,
    ETH_FILE,
    TICK_EVENTS,
    ServiceProcess,
    SseEvent,
    collect,
    free_port,
    iter_events,
    nats_url,
    replay_args,
    start_edge,
    start_feed,
    start_nats_cluster,
    wait_for_status,
    wait_http_ok,
)

SYMBOLS = ("BTCUSDT", "ETHUSDT")
REPLAY = replay_args(BTC_FILE, ETH_FILE, speed="1", loop=True)  # about 185 ticks/s


@dataclass
class Cluster:
    nodes: list[ServiceProcess]
    feeds: dict[str, ServiceProcess]  # "a" (producers only) and "b" (the replay)
    edges: list[ServiceProcess]  # edges[0] reads a first, edges[1] reads b first

    def feed_args(self, name: str) -> list[str]:
        source = REPLAY if name == "b" else ["--source", "none"]
        url = [*nats_args(self.nodes[0], "TICKS"), "--nats-url", nats_url(*self.nodes)]
        return [*source, *url, "--nats-replicas", "3"]

    def restart(self, name: str) -> None:
        self.feeds[name] = start_feed(*self.feed_args(name), port=self.feeds[name].port)

    def stop_all(self) -> None:
        for service in [*self.edges, *self.feeds.values(), *self.nodes]:
            service.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    nodes = start_nats_cluster(tmp_path / "nats")
    stack = Cluster(nodes, {}, [])
    try:
        for name in ("a", "b"):
            stack.feeds[name] = start_feed(*stack.feed_args(name))
        a, b = (f"127.0.0.1:{stack.feeds[name].port}" for name in ("a", "b"))
        for order in (f"{a},{b}", f"{b},{a}"):
            stack.edges.append(start_edge(0, "--feed-target", order))
        yield stack
    finally:
        stack.stop_all()


class Client:
    """One SSE client of ``url``, collecting its events until told to stop after ``more``
    further ticks; it may be cut and come back with its Last-Event-ID."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[SseEvent] = []
        self.target: int | None = None  # stop once this many ticks are held
        self.reconnects = 0

    @property
    def ticks(self) -> list[SseEvent]:
        return [e for e in self.events if e.event in TICK_EVENTS]

    async def run(self, http: httpx.AsyncClient) -> None:
        headers = {}
        if self.ticks:
            headers["Last-Event-ID"] = str(self.ticks[-1].id)
        async with http.stream("GET", self.url, headers=headers) as response:
            assert response.status_code == 200
            count = len(self.ticks)
            async for event in iter_events(response):
                self.events.append(event)
                if event.event in TICK_EVENTS:
                    count += 1
                    if self.target is not None and count >= self.target:
                        return

    @property
    def done(self) -> bool:
        return self.target is not None and len(self.ticks) >= self.target

    async def run_reconnecting(self, http: httpx.AsyncClient) -> None:
        """:meth:`run`, reconnecting with the last id whenever the stream is cut, as an
        EventSource does, until the target is reached."""
        while not self.done:
            with contextlib.suppress(httpx.HTTPError):
                await self.run(http)
            if not self.done:
                self.reconnects += 1
                await asyncio.sleep(0.2)

    def finish_after(self, more: int) -> None:
        self.target = len(self.ticks) + more

    def assert_unbroken(self) -> None:
        """No reset; per (symbol, type) the sequence steps by one; offsets only grow."""
        assert not [e for e in self.events if e.event == "reset"], "no client is reset"
        last: dict[tuple[str, str], int] = {}
        offsets = [e.offset for e in self.ticks]
        assert offsets == sorted(set(offsets)), "no repeat, in offset order"
        for event in self.ticks:
            tick = json.loads(event.data)
            key = (tick["symbol"], event.event)
            sequence = int(tick["sequence"])
            assert last.get(key, sequence - 1) + 1 == sequence, f"{key}: gap at {sequence}"
            last[key] = sequence


async def until(predicate: Callable[[], bool], within: float = 60) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - polling the clients' lists
            await asyncio.sleep(0.05)


async def more_ticks(clients: list[Client], count: int) -> None:
    """Wait until every client has ``count`` more ticks than now."""
    wanted = [len(client.ticks) + count for client in clients]
    await until(lambda: all(len(c.ticks) >= n for c, n in zip(clients, wanted, strict=True)))


async def test_killing_the_replica_an_edge_reads_moves_its_clients_without_a_reset(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    clients = [
        Client(f"http://127.0.0.1:{edge.port}/sse/{symbol}")
        for edge in cluster.edges
        for symbol in SYMBOLS
        for _ in range(25)
    ]
    running = [asyncio.create_task(client.run(http)) for client in clients]
    await until(lambda: all(len(c.ticks) >= 10 for c in clients))

    cluster.feeds["a"].signal(signal.SIGKILL)  # edges[0] reads it
    cluster.feeds["a"].popen.wait()
    for client in clients:
        client.finish_after(150)
    await asyncio.wait_for(asyncio.gather(*running), 90)
    for client in clients:
        client.assert_unbroken()
    for edge in cluster.edges:
        ready = (await http.get(f"http://127.0.0.1:{edge.port}/readyz")).json()
        assert ready["feed"] == f"127.0.0.1:{cluster.feeds['b'].port}"


async def test_restarting_every_replica_resets_no_client_and_loses_nothing(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    base = f"http://127.0.0.1:{cluster.edges[0].port}"
    held = [Client(f"{base}/sse?symbols=BTCUSDT,ETHUSDT") for _ in range(10)]
    running = [asyncio.create_task(client.run(http)) for client in held]
    returning = Client(f"{base}/sse?symbols=BTCUSDT,ETHUSDT")
    returning.finish_after(50)
    await returning.run(http)
    await until(lambda: all(len(c.ticks) >= 10 for c in held))

    for name in ("a", "b"):  # one by one: the other keeps serving (and b's replay restarts)
        cluster.feeds[name].stop()
        cluster.restart(name)
        await more_ticks(held, 20)
    for feed in cluster.feeds.values():  # all at once
        feed.signal(signal.SIGKILL)
    for feed in cluster.feeds.values():
        feed.popen.wait()
    await wait_for_status(http, f"{base}/readyz", 503)
    for name in ("a", "b"):
        cluster.restart(name)
    await wait_for_status(http, f"{base}/readyz", 200, within=60)

    returning.finish_after(300)  # back with its last id: everything published meanwhile
    await asyncio.wait_for(returning.run(http), 60)
    returning.assert_unbroken()
    for client in held:
        client.finish_after(300)
    await asyncio.wait_for(asyncio.gather(*running), 90)
    for client in held:
        client.assert_unbroken()
    fresh = await collect(http, f"{base}/sse/BTCUSDT", 5)
    assert not [e for e in fresh if e.event == "reset"]


@contextlib.contextmanager
def nginx_in_front(edges: list[ServiceProcess], directory: Path) -> Iterator[str]:
    """``deploy/nginx-cluster.conf`` serving ``edges`` on a free port; its base URL."""
    port = free_port()
    command = nginx_command(directory, port, [edge.port for edge in edges])
    assert command is not None, "nginx is installed by make test"
    check = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    proxy = subprocess.Popen([*command, "-g", "daemon off;"])
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{base}/readyz", edges[0])
        yield base
    finally:
        proxy.terminate()
        proxy.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


async def test_killing_an_edge_sends_its_clients_through_nginx_to_the_other(
    cluster: Cluster, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    with nginx_in_front(cluster.edges, tmp_path / "nginx") as base:
        clients = [Client(f"{base}/sse?symbols=BTCUSDT,ETHUSDT") for _ in range(20)]
        running = [asyncio.create_task(client.run_reconnecting(http)) for client in clients]
        await until(lambda: all(len(c.ticks) >= 10 for c in clients))
        counts = [await edge_streams(edge) for edge in cluster.edges]
        assert all(counts) and sum(counts) == len(clients), "nginx spread them over both"

        cluster.edges[0].signal(signal.SIGKILL)
        cluster.edges[0].popen.wait()
        for client in clients:
            client.finish_after(300)
        await asyncio.wait_for(asyncio.gather(*running), 90)
    assert sum(client.reconnects > 0 for client in clients) == counts[0], "its clients came back"
    for client in clients:
        client.assert_unbroken()
    assert await edge_streams(cluster.edges[1]) == 0  # they finished


async def edge_streams(edge: ServiceProcess) -> int:
    """The SSE streams an edge holds (its open streams gauge)."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{edge.port}/metrics")).text
    return sum(
        int(float(line.split()[-1]))
        for line in text.splitlines()
        if line.startswith("tickstream_edge_open_streams ")
    )
