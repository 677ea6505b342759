"""CORS (issue 6): an allowlist of origins, preflight answered, never ``*`` with credentials."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support import ServiceProcess, start_edge, start_feed

ALLOWED = "https://app.example.com"


@pytest.fixture(scope="module")
def feed() -> Iterator[ServiceProcess]:
    process = start_feed("--symbols", "AAA", "--rate", "20")
    yield process
    process.stop()


def preflight(port: int, origin: str) -> httpx.Response:
    return httpx.options(
        f"http://127.0.0.1:{port}/sse/AAA",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "last-event-id",
        },
    )


def test_allowlisted_origin_gets_credentials_others_get_nothing(feed: ServiceProcess) -> None:
    edge = start_edge(feed.port, "--cors-origins", f"{ALLOWED},https://other.example.com")
    try:
        answer = preflight(edge.port, ALLOWED)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == ALLOWED
        assert answer.headers["access-control-allow-credentials"] == "true"
        assert "last-event-id" in answer.headers["access-control-allow-headers"].lower()
        refused = preflight(edge.port, "https://evil.example.net")
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        simple = httpx.get(f"http://127.0.0.1:{edge.port}/symbols", headers={"Origin": ALLOWED})
        assert simple.headers["access-control-allow-origin"] == ALLOWED
        other = httpx.get(
            f"http://127.0.0.1:{edge.port}/symbols", headers={"Origin": "https://evil.example.net"}
        )
        assert "access-control-allow-origin" not in other.headers
    finally:
        edge.stop()


def test_any_origin_never_comes_with_credentials(feed: ServiceProcess) -> None:
    edge = start_edge(feed.port, "--cors-origins", "*")
    try:
        answer = preflight(edge.port, "https://anywhere.example.org")
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in answer.headers
    finally:
        edge.stop()


def test_no_cors_headers_by_default(feed: ServiceProcess) -> None:
    edge = start_edge(feed.port)
    try:
        simple = httpx.get(f"http://127.0.0.1:{edge.port}/symbols", headers={"Origin": ALLOWED})
        assert "access-control-allow-origin" not in simple.headers
    finally:
        edge.stop()
