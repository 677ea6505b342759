"""Operator faults speak up (issue 14): an edge that cannot use its feed says why, in
``/readyz``, in a metric and in one log line per change of cause, for a port where nothing
listens, a server speaking HTTP/1, a wrong feed token and a TLS edge before a plaintext feed; and
the feed says once per change which address it refuses and why."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from tests.support import ServiceProcess, free_port, services, start_edge, start_feed

CHECKS_S = 3.0  # several health checks (every 0.5 s): the cause is logged once, not each time


def readyz(edge: ServiceProcess) -> tuple[int, dict[str, object]]:
    reply = httpx.get(f"http://127.0.0.1:{edge.port}/readyz", timeout=5)
    return reply.status_code, reply.json()


def problem_metric(edge: ServiceProcess) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{edge.port}/metrics", timeout=5).text
    values = {}
    for line in text.splitlines():
        if line.startswith('tickstream_edge_feed_problem{cause="'):
            cause = line.split('"')[1]
            values[cause] = float(line.rsplit(" ", 1)[1])
    return values


def assert_cause(edge: ServiceProcess, cause: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status, body = readyz(edge)
        if body.get("feed") == cause:
            break
        time.sleep(0.2)
    assert status == 503 and body["feed"] == cause, body
    assert cause in str(body["detail"])
    time.sleep(CHECKS_S)
    metric = problem_metric(edge)
    assert metric[cause] == 1.0 and sum(metric.values()) == 1.0, metric
    said = [line for line in edge.lines if f"not ready: {cause} (" in line]
    assert len(said) == 1, "\n".join(said) or edge.output()


@pytest.fixture
def http1_server() -> Iterator[int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


def test_nothing_listening_and_another_protocol_are_named(http1_server: int) -> None:
    with services(start_edge(free_port(), wait_ready=False)) as (edge,):
        assert_cause(edge, "unreachable")
    with services(start_edge(http1_server, wait_ready=False)) as (edge,):
        assert_cause(edge, "protocol")


def test_a_wrong_token_and_a_tls_mismatch_are_named(tmp_path: Path) -> None:
    tokens = tmp_path / "clients.json"
    clients = [{"name": "edge", "token": "edge-token-0123456789", "symbols": ["*"]}]
    tokens.write_text(json.dumps({"clients": clients}))
    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    feed = start_feed("--symbols", "AAA", "--rate", "5", "--client-tokens", str(tokens))
    with services(feed):
        wrong = start_edge(feed.port, wait_ready=False, env={"EDGE_FEED_TOKEN": "guess-0123456"})
        with services(wrong) as (edge,):
            assert_cause(edge, "unauthenticated")
        # The feed says it too: once for the address and cause, however often the edge tried.
        refusals = [line for line in feed.lines if "refused a client at 127.0.0.1" in line]
        assert len(refusals) == 1 and "unknown_token" in refusals[0], feed.output()
        text = httpx.get(f"http://127.0.0.1:{feed.metrics_port}/metrics", timeout=5).text
        counted = 'tickstream_feed_refused_calls_total{cause="unknown_token"} '
        assert float(text.split(counted)[1].split()[0]) >= 2, "every refusal is counted"
        tls = start_edge(feed.port, "--feed-tls-ca", str(ca), wait_ready=False)
        with services(tls) as (edge,):
            assert_cause(edge, "tls")
        right = start_edge(feed.port, env={"EDGE_FEED_TOKEN": "edge-token-0123456789"})
        with services(right) as (edge,):
            status, body = readyz(edge)
            assert status == 200 and sum(problem_metric(edge).values()) == 0.0, body
            assert not any("not ready:" in line for line in edge.lines)
