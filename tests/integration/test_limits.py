"""Limits that protect everyone (issue 6): streams per client address, per token and per
process, a connect rate, and request sizes; each refusal a problem document with Retry-After
where retrying later helps. Behind a proxy the client address comes from X-Forwarded-For, which
uvicorn trusts from loopback only (its FORWARDED_ALLOW_IPS default): the tests use it to act as
several clients."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import jwt
import pytest

from tests.support import ServiceProcess, start_edge, start_feed

SECRET = "limits-test-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def feed() -> Iterator[ServiceProcess]:
    process = start_feed("--symbols", "AAA", "--rate", "20")
    yield process
    process.stop()


def open_streams(
    stack: ExitStack, http: httpx.Client, url: str, headers_list: list[dict[str, str]]
) -> list[httpx.Response]:
    """Open one stream per headers dict and keep it open (in ``stack``)."""
    return [stack.enter_context(http.stream("GET", url, headers=h)) for h in headers_list]


def test_streams_per_client_address_and_per_process(feed: ServiceProcess) -> None:
    edge = start_edge(feed.port, "--max-streams-per-client", "2", "--max-streams", "3")
    url = f"http://127.0.0.1:{edge.port}/sse/AAA"
    try:
        with httpx.Client(timeout=10) as http, ExitStack() as stack:
            mine = open_streams(stack, http, url, [{}, {}])
            assert [r.status_code for r in mine] == [200, 200]
            third = http.get(url)
            assert third.status_code == 429 and third.headers["retry-after"] == "5"
            assert third.json()["type"].endswith("/streams-per-client")
            other = open_streams(stack, http, url, [{"X-Forwarded-For": "10.1.1.1"}])
            assert other[0].status_code == 200, "another client still gets in"
            full = http.get(url, headers={"X-Forwarded-For": "10.2.2.2"})
            assert full.status_code == 503 and full.json()["type"].endswith("/too-many-streams")
            assert "retry-after" in full.headers
            mine[0].close()
            time.sleep(0.5)
            with http.stream("GET", url, headers={"X-Forwarded-For": "10.2.2.2"}) as again:
                assert again.status_code == 200, "a closed stream frees its place"
    finally:
        edge.stop()


def test_connect_rate_per_address(feed: ServiceProcess) -> None:
    edge = start_edge(feed.port, "--connect-rate", "1", "--connect-burst", "3")
    url = f"http://127.0.0.1:{edge.port}/sse/AAA"
    try:
        with httpx.Client(timeout=10) as http:
            codes = []
            for _ in range(4):
                with http.stream("GET", url) as response:
                    codes.append(response.status_code)
                    retry_after = response.headers.get("retry-after")
            assert codes == [200, 200, 200, 429]
            assert retry_after is not None and int(retry_after) >= 1
            with http.stream("GET", url, headers={"X-Forwarded-For": "10.3.3.3"}) as response:
                assert response.status_code == 200, "other addresses have their own budget"
            time.sleep(1.2)
            with http.stream("GET", url) as response:
                assert response.status_code == 200, "the budget refills"
    finally:
        edge.stop()


def test_an_address_over_its_connect_rate_is_refused_before_parsing(feed: ServiceProcess) -> None:
    """Issue 14: a connect flood costs the edge its HTTP parser and app no more. While a (not
    trusted-proxy) address has spent its connect rate, its new connections get a pre-built 429
    (plain text, Retry-After) for their first bytes; once the rate refills, streams again."""
    env = {"FORWARDED_ALLOW_IPS": "10.9.9.9"}  # loopback is an ordinary client here
    edge = start_edge(feed.port, "--connect-rate", "1", "--connect-burst", "2", env=env)
    url = f"http://127.0.0.1:{edge.port}/sse/AAA"
    try:
        replies = []
        for _ in range(4):  # a new connection each (a pooled one would skip connection_made)
            with httpx.Client(timeout=10) as http, http.stream("GET", url) as response:
                replies.append((response.status_code, response.headers.get("content-type")))
                retry_after = response.headers.get("retry-after")
        assert replies[:2] == [(200, "text/event-stream; charset=utf-8")] * 2, replies
        assert replies[2:] == [(429, "text/plain")] * 2, "refused before parsing, no problem doc"
        assert retry_after == "1"
        time.sleep(1.2)
        with httpx.Client(timeout=10) as http, http.stream("GET", url) as response:
            assert response.status_code == 200, "the budget refills"
    finally:
        edge.stop()


def test_streams_per_token_subject(feed: ServiceProcess) -> None:
    edge = start_edge(
        feed.port,
        *("--auth", "jwt", "--max-streams-per-token", "1"),
        env={"EDGE_JWT_SECRET": SECRET},
    )
    url = f"http://127.0.0.1:{edge.port}/sse/AAA"

    def bearer(subject: str) -> dict[str, str]:
        claims = {"sub": subject, "exp": int(time.time() + 300)}
        return {"Authorization": f"Bearer {jwt.encode(claims, SECRET)}"}

    try:
        with httpx.Client(timeout=10) as http, ExitStack() as stack:
            first = open_streams(stack, http, url, [bearer("alice")])
            assert first[0].status_code == 200
            second = http.get(url, headers={**bearer("alice"), "X-Forwarded-For": "10.4.4.4"})
            assert second.status_code == 429
            assert second.json()["type"].endswith("/streams-per-token")
            bob = open_streams(stack, http, url, [bearer("bob")])
            assert bob[0].status_code == 200
            # A token without sub is limited as itself, not left unlimited.
            anonymous = {
                "Authorization": f"Bearer {jwt.encode({'exp': int(time.time() + 300)}, SECRET)}"
            }
            assert open_streams(stack, http, url, [anonymous])[0].status_code == 200
            again = http.get(url, headers={**anonymous, "X-Forwarded-For": "10.5.5.5"})
            assert again.status_code == 429
    finally:
        edge.stop()


def test_request_target_and_header_sizes(feed: ServiceProcess) -> None:
    edge = start_edge(feed.port)
    base = f"http://127.0.0.1:{edge.port}"
    try:
        long_target = httpx.get(f"{base}/sse?symbols=AAA&pad={'x' * 9000}")
        assert long_target.status_code == 414
        assert long_target.headers["content-type"] == "application/problem+json"
        big_headers = httpx.get(f"{base}/symbols", headers={"X-Pad": "y" * 20_000})
        assert big_headers.status_code == 431
        assert big_headers.json()["type"].endswith("/headers-too-large")
        assert httpx.get(f"{base}/symbols").status_code == 200
    finally:
        edge.stop()
