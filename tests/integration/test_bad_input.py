"""Acceptance 6: bad input gets a clear error; the processes and other streams carry on."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest
from tickstream.v1 import feed_pb2, feed_pb2_grpc, tick_pb2

from tests.conftest import Stack
from tests.integration.test_resume import assert_contiguous
from tests.support import SseEvent, follow, iter_events

EDGE_CASES = [
    ("/sse/NOPE", 404, "unknown-symbol"),
    ("/sse?symbols=BTCUSDT,NOPE", 404, "unknown-symbol"),
    ("/sse?symbols=", 400, "invalid-symbols"),
    ("/sse?symbols=,,", 400, "invalid-symbols"),
    ("/sse?symbols=btcusdt", 400, "invalid-symbols"),
    ("/sse?symbols=BTC%0AUSDT", 400, "invalid-symbols"),
    ("/sse?symbols=BTC%20USDT%3Aevil", 400, "invalid-symbols"),
    ("/sse?symbols=" + "A" * 40, 400, "invalid-symbols"),
    ("/sse?symbols=" + ",".join(f"S{i}" for i in range(201)), 400, "too-many-symbols"),
    ("/sse?symbols=BTCUSDT&types=foo", 400, "invalid-types"),
    ("/sse?symbols=BTCUSDT&types=", 400, "invalid-types"),
    ("/sse?symbols=BTCUSDT&types=trade,bogus", 400, "invalid-types"),
    ("/sse?symbols=BTCUSDT&snapshot=maybe", 422, "invalid-request"),
    ("/sse", 422, "invalid-request"),
    ("/sse/BTCUSDT?types=trade,,quote", 400, "invalid-types"),
    ("/sse/BTCUSDT%0A", 400, "invalid-symbols"),
    ("/sse/BTCUSDT%0D", 400, "invalid-symbols"),
    ("/sse/BTCUSDT%20", 400, "invalid-symbols"),
    ("/sse/%09BTCUSDT", 400, "invalid-symbols"),
    ("/sse?symbols=BTCUSDT&symbols=NOPE", 404, "unknown-symbol"),
    ("/sse?symbols=BTCUSDT&types=trade&types=bogus", 400, "invalid-types"),
    ("/sse/" + "A" * 5000, 400, "invalid-symbols"),
    ("/sse/BTC%2FUSDT", 400, "invalid-symbols"),  # one segment: a malformed symbol, not a route
]


async def test_edge_bad_requests_get_problem_json_and_others_are_untouched(
    live_stack: Stack, http: httpx.AsyncClient
) -> None:
    stop = asyncio.Event()
    events: list[SseEvent] = []
    healthy = asyncio.create_task(follow(f"{live_stack.base_url}/sse/ETHUSDT", events, stop))
    async with asyncio.timeout(30):
        while not events:  # noqa: ASYNC110 - polling a list
            await asyncio.sleep(0.05)
    for path, status, kind in EDGE_CASES:
        response = await http.get(live_stack.base_url + path)
        assert response.status_code == status, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json", path
        problem = response.json()
        assert problem["status"] == status
        assert problem["type"].endswith("/" + kind), (path, problem)
        assert problem["title"] and problem["detail"]
        assert "\n" not in problem["detail"]
    for method, path in [("POST", "/sse/BTCUSDT"), ("PUT", "/sse"), ("DELETE", "/symbols")]:
        response = await http.request(method, live_stack.base_url + path)
        assert response.status_code == 405, (method, path)
        assert response.headers["content-type"] == "application/problem+json"
    # A query string far past any sane size: refused by the HTTP server itself.
    reader, writer = await asyncio.open_connection("127.0.0.1", live_stack.edge.port)
    writer.write(b"GET /sse?symbols=" + b"A," * 100_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert status_line.split()[1] in (b"400", b"414", b"431"), status_line
    # A Last-Event-ID of garbage is answered with a reset, never an error loop.
    async with http.stream(
        "GET", f"{live_stack.base_url}/sse/BTCUSDT", headers={"Last-Event-ID": "<script>-1;" * 50}
    ) as response:
        assert response.status_code == 200
        async for event in iter_events(response):
            assert event.event == "reset"
            break

    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(healthy, 30)
    ticks = [e for e in events if e.event in ("trade", "quote")]
    assert len(ticks) > 10, "the healthy stream kept flowing"
    assert_contiguous(ticks)
    assert live_stack.edge.alive and live_stack.feed.alive
    assert (await http.get(f"{live_stack.base_url}/readyz")).status_code == 200


async def test_edge_names_every_invalid_parameter_and_the_path_as_sent(
    live_stack: Stack, http: httpx.AsyncClient
) -> None:
    """The SSE routes answer as FastAPI's validation would: every invalid query parameter named
    in one 422, and the problem's ``instance`` is the path as sent (still percent-encoded)."""
    response = await http.get(f"{live_stack.base_url}/sse?snapshot=maybe")
    assert response.status_code == 422
    found = [error["loc"] for error in response.json()["errors"]]
    assert found == [["query", "snapshot"], ["query", "symbols"]]
    response = await http.get(f"{live_stack.base_url}/sse/A%3FB")
    assert response.status_code == 400
    assert response.json()["instance"] == "/sse/A%3FB"


@pytest.mark.parametrize(
    ("request_fields", "code"),
    [
        ({"symbols": ["NOPE"]}, grpc.StatusCode.NOT_FOUND),
        ({"symbols": []}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"symbols": ["bad symbol"]}, grpc.StatusCode.INVALID_ARGUMENT),
        (
            {"symbols": ["BTCUSDT"], "types": [tick_pb2.TICK_TYPE_UNSPECIFIED]},
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        ({"symbols": ["BTCUSDT"], "types": [99]}, grpc.StatusCode.INVALID_ARGUMENT),
        (
            {"symbols": ["BTCUSDT"], "after": feed_pb2.StreamPosition(offset=5)},
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        ({"symbols": ["X" * 5000]}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"symbols": [f"S{i}" for i in range(1001)]}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"symbols": ["BTCUSDT", "btc usdt"]}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"symbols": ["BTCUSDT", "NOPE1", "NOPE2"]}, grpc.StatusCode.NOT_FOUND),
    ],
    ids=[
        "unknown",
        "empty",
        "malformed",
        "unspecified-type",
        "unknown-type",
        "no-epoch",
        "huge",
        "too-many",
        "one-malformed",
        "two-unknown",
    ],
)
async def test_feed_rejects_bad_subscribe_with_status(
    live_stack: Stack, request_fields: dict[str, object], code: grpc.StatusCode
) -> None:
    async with grpc.aio.insecure_channel(live_stack.feed_target) as channel:
        stub = feed_pb2_grpc.FeedServiceStub(channel)
        call = stub.Subscribe(feed_pb2.SubscribeRequest(**request_fields))  # type: ignore[arg-type]
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async with asyncio.timeout(10):
                async for _ in call:
                    pass
        assert raised.value.code() == code
        if code == grpc.StatusCode.NOT_FOUND:
            assert "NOPE" in (raised.value.details() or "")
    assert live_stack.feed.alive
