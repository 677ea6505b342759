"""Acceptance 1: ``make run`` serves real BTCUSDT ticks at /sse/BTCUSDT within 15 s."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT

DEADLINE_S = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_make(target: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """``make target`` in its own process group (so the test can stop all of it), output piped."""
    return subprocess.Popen(
        ["make", "--no-print-directory", target],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def test_make_run_serves_real_btcusdt_ticks_within_15_seconds() -> None:
    feed_port, edge_port, metrics_port = free_port(), free_port(), free_port()
    env = {**os.environ, "FEED_PORT": str(feed_port), "EDGE_PORT": str(edge_port)}
    env["FEED_METRICS_PORT"] = str(metrics_port)
    started = time.monotonic()
    make = start_make("run", env)
    tick = None
    try:
        while tick is None and time.monotonic() - started < DEADLINE_S:
            try:
                with httpx.stream(
                    "GET", f"http://127.0.0.1:{edge_port}/sse/BTCUSDT", timeout=5
                ) as response:
                    if response.status_code != 200:
                        time.sleep(0.2)
                        continue
                    for line in response.iter_lines():
                        if line.startswith("data: "):
                            tick = json.loads(line[6:])
                            break
            except httpx.HTTPError:
                time.sleep(0.2)
        elapsed = time.monotonic() - started
        time.sleep(1.5)  # make run polls /readyz every 0.2 s, then prints where to look
        feed_metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        output, _ = make.communicate(timeout=30)
    assert tick is not None, f"no tick within {DEADLINE_S}s:\n{output}"
    assert elapsed < DEADLINE_S
    assert tick["symbol"] == "BTCUSDT"
    body = tick.get("trade") or tick["quote"]
    assert all("." in value for key, value in body.items() if key.endswith(("price", "Price")))
    assert f"http://127.0.0.1:{edge_port}/" in output, "make run prints where to look"
    assert "tickstream_feed_head_offset" in feed_metrics.text, "the feed's metrics are on"


def test_make_run_cluster_serves_ticks_through_nginx_and_stops_cleanly(tmp_path: Path) -> None:
    ports = {
        "NATS_PORTS": ",".join(str(free_port()) for _ in range(3)),
        "NATS_ROUTE_PORTS": ",".join(str(free_port()) for _ in range(3)),
        "FEED_PORTS": f"{free_port()},{free_port()}",
        "FEED_METRICS_PORTS": f"{free_port()},{free_port()}",
        "EDGE_PORTS": f"{free_port()},{free_port()}",
        "PROXY_PORT": str(free_port()),
    }
    env = {**os.environ, **ports, "CLUSTER_DIR": str(tmp_path / "cluster")}
    make = start_make("run-cluster", env)
    tick, again, base = None, None, f"http://127.0.0.1:{ports['PROXY_PORT']}"
    try:
        deadline = time.monotonic() + 90
        while tick is None and time.monotonic() < deadline:
            tick = first_tick(f"{base}/sse/BTCUSDT")
        time.sleep(1.0)  # it prints the picture once nginx answers /readyz
        # One edge dies: the rest stays up, and nginx serves from the other.
        os.kill(cluster_pid(make.pid, "edge_service", ports["EDGE_PORTS"].split(",")[0]), 9)
        again = None
        deadline = time.monotonic() + 20
        while again is None and time.monotonic() < deadline:
            again = first_tick(f"{base}/sse/ETHUSDT")
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        output, _ = make.communicate(timeout=60)
    assert tick is not None and tick["symbol"] == "BTCUSDT", output[-3000:]
    assert again is not None, "nginx serves from the other edge:\n" + output[-3000:]
    assert "edge_service --port" in output and "exited (-9)" in output, output[-3000:]
    assert f"{base}/" in output and "NATS JetStream" in output, "it prints the picture"
    time.sleep(1.0)
    with pytest.raises(ProcessLookupError):  # every NATS node, feed, edge and nginx ended
        os.killpg(make.pid, 0)


def first_tick(url: str) -> dict[str, str] | None:
    """The first tick of the stream at ``url``; None when it cannot be read now."""
    try:
        with httpx.stream("GET", url, timeout=5) as response:
            for line in response.iter_lines() if response.status_code == 200 else ():
                if line.startswith("data: "):
                    return dict(json.loads(line[6:]))
    except httpx.HTTPError:
        pass
    time.sleep(0.3)
    return None


def cluster_pid(group: int, module: str, port: str) -> int:
    """The PID of the ``python -m module --port port`` process of process group ``group``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if os.getpgid(int(entry.name)) != group:
                continue
        except (OSError, ProcessLookupError):
            continue
        if module.encode() in argv and port.encode() in argv:
            return int(entry.name)
    raise AssertionError(f"no {module} on port {port} in process group {group}")
