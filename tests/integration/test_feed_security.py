"""Feed transport security and client tokens (issue 6): TLS with mutual authentication
(certificates made at test time with trustme), and per-client bearer tokens in gRPC metadata
checked by an interceptor (UNAUTHENTICATED) and by the servicer (PERMISSION_DENIED)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tickstream.v1 import feed_pb2, feed_pb2_grpc

from tests.support import collect, iter_events, spawn, start_edge, start_feed


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("edge.tickstream.test")
    files = {
        "ca": ca.cert_pem,
        "server_cert": server.cert_chain_pems[0],
        "server_key": server.private_key_pem,
        "client_cert": client.cert_chain_pems[0],
        "client_key": client.private_key_pem,
    }
    paths = {}
    for name, blob in files.items():
        paths[name] = folder / f"{name}.pem"
        blob.write_to_path(str(paths[name]))
    other = trustme.CA().issue_cert("intruder.test")
    paths["other_cert"], paths["other_key"] = folder / "other_cert.pem", folder / "other_key.pem"
    other.cert_chain_pems[0].write_to_path(str(paths["other_cert"]))
    other.private_key_pem.write_to_path(str(paths["other_key"]))
    return paths


def subscribe_code(channel: grpc.Channel, symbols: list[str], token: str | None) -> grpc.StatusCode:
    """The status a Subscribe of ``symbols`` gets: OK once a first message arrives."""
    stub = feed_pb2_grpc.FeedServiceStub(channel)
    metadata = [("authorization", f"Bearer {token}")] if token else None
    call = stub.Subscribe(feed_pb2.SubscribeRequest(symbols=symbols), metadata=metadata, timeout=10)
    try:
        next(iter(call))
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()
    finally:
        call.cancel()


async def first_tick_through(edge_port: int) -> str:
    async with (
        httpx.AsyncClient(timeout=20) as http,
        http.stream("GET", f"http://127.0.0.1:{edge_port}/sse/AAA") as response,
    ):
        assert response.status_code == 200
        async for event in iter_events(response):
            if event.event in ("trade", "quote"):
                return event.event
    raise AssertionError("no tick")


async def resumes_through(edge_port: int) -> None:
    """Regression: a resume (``earliest``, then a cursor) reads the feed's history through a
    catch-up Subscribe of its own; without the token on it every resume ended with
    ``disconnect``/``feed_unavailable`` (the aio stream interceptor was never applied)."""
    base = f"http://127.0.0.1:{edge_port}/sse/AAA"
    async with httpx.AsyncClient(timeout=20) as http:
        events = await collect(http, f"{base}?last_event_id=earliest", 20)
        assert all(e.event in ("trade", "quote") for e in events), events[-1]
        cursor = events[9].id
        assert cursor is not None
        resumed = await collect(http, base, 5, headers={"Last-Event-ID": cursor})
    assert [e.offset for e in resumed] == [e.offset for e in events[10:15]]


async def test_mutual_tls_admits_the_edge_and_refuses_clients_without_a_certificate(
    pki: dict[str, Path],
) -> None:
    feed = start_feed(
        *("--symbols", "AAA", "--rate", "50"),
        *("--tls-cert", str(pki["server_cert"]), "--tls-key", str(pki["server_key"])),
        *("--tls-client-ca", str(pki["ca"])),
        wait_ready=False,
    )
    try:
        edge = start_edge(
            feed.port,
            *("--feed-tls-ca", str(pki["ca"])),
            *("--feed-tls-cert", str(pki["client_cert"]), "--feed-tls-key", str(pki["client_key"])),
        )
        try:
            assert await first_tick_through(edge.port) in ("trade", "quote")
        finally:
            edge.stop()
        target = f"127.0.0.1:{feed.port}"
        trusted = grpc.ssl_channel_credentials(pki["ca"].read_bytes())
        with grpc.secure_channel(target, trusted) as no_cert:
            assert subscribe_code(no_cert, ["AAA"], None) == grpc.StatusCode.UNAVAILABLE
        foreign = grpc.ssl_channel_credentials(
            pki["ca"].read_bytes(), pki["other_key"].read_bytes(), pki["other_cert"].read_bytes()
        )
        with grpc.secure_channel(target, foreign) as wrong_ca:
            assert subscribe_code(wrong_ca, ["AAA"], None) == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(target) as plaintext:
            assert subscribe_code(plaintext, ["AAA"], None) == grpc.StatusCode.UNAVAILABLE
        # An edge without a client certificate never becomes ready.
        lonely = start_edge(feed.port, "--feed-tls-ca", str(pki["ca"]), wait_ready=False)
        try:
            await asyncio.sleep(1.5)  # several health checks
            async with httpx.AsyncClient(timeout=10) as http:
                ready = await http.get(f"http://127.0.0.1:{lonely.port}/readyz")
            assert ready.status_code == 503
        finally:
            lonely.stop()
    finally:
        feed.stop()


@pytest.fixture(scope="module")
def token_feed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    tokens = tmp_path_factory.mktemp("tokens") / "clients.json"
    tokens.write_text(
        json.dumps(
            {
                "clients": [
                    {"name": "edge", "token": "edge-token-0123456789", "symbols": ["*"]},
                    {"name": "b-desk", "token": "b-only-token-0123456789", "symbols": ["B*"]},
                ]
            }
        )
    )
    feed = start_feed("--symbols", "AAA,BBB", "--rate", "50", "--client-tokens", str(tokens))
    yield feed.port, tokens
    feed.stop()


async def test_client_tokens_unauthenticated_and_permission_denied(
    token_feed: tuple[int, Path],
) -> None:
    port, _ = token_feed
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert subscribe_code(channel, ["AAA"], None) == grpc.StatusCode.UNAUTHENTICATED
        assert subscribe_code(channel, ["AAA"], "guess") == grpc.StatusCode.UNAUTHENTICATED
        assert subscribe_code(channel, ["AAA"], "b-only-token-0123456789") == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert subscribe_code(channel, ["BBB"], "b-only-token-0123456789") == grpc.StatusCode.OK
        assert subscribe_code(channel, ["AAA", "BBB"], "edge-token-0123456789") == (
            grpc.StatusCode.OK
        )
        stub = feed_pb2_grpc.FeedServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListSymbols(feed_pb2.ListSymbolsRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING, "probes stay open"


async def test_the_edge_presents_its_feed_token(token_feed: tuple[int, Path]) -> None:
    port, _ = token_feed
    edge = start_edge(port, env={"EDGE_FEED_TOKEN": "edge-token-0123456789"})
    try:
        assert await first_tick_through(edge.port) in ("trade", "quote")
        await resumes_through(edge.port)
        assert not any("edge-token-0123456789" in line for line in edge.lines)
    finally:
        edge.stop()
    tokenless = start_edge(port, wait_ready=False)
    try:
        await asyncio.sleep(1.5)
        async with httpx.AsyncClient(timeout=10) as http:
            status = (await http.get(f"http://127.0.0.1:{tokenless.port}/symbols")).status_code
        assert status == 503, "without its token the edge cannot list symbols"
    finally:
        tokenless.stop()


def test_a_tokens_file_with_a_string_for_symbols_is_refused(tmp_path: Path) -> None:
    tokens = tmp_path / "clients.json"
    tokens.write_text('{"clients": [{"name": "q", "token": "t-0123456789", "symbols": "BBB*"}]}')
    feed = spawn(
        "feed", "feed_service", ["--port", "0", "--no-metrics", "--client-tokens", str(tokens)]
    )
    try:
        assert feed.popen.wait(30) == 2, "a bare string would read as the patterns B, B, B, *"
        feed.wait_for_line(r"symbols must be a list of strings")
    finally:
        feed.kill()
