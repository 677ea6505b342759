"""The edge's HTTP surface: SSE headers and preamble, symbols, health, metrics, OpenAPI, page."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import Stack


async def test_sse_headers_and_preamble(replay_stack: Stack, http: httpx.AsyncClient) -> None:
    url = f"{replay_stack.base_url}/sse/BTCUSDT?snapshot=true"
    headers = {"Accept-Encoding": "gzip"}
    async with asyncio.timeout(10), http.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in response.headers
        text = ""
        async for chunk in response.aiter_text():
            text += chunk
            if text.count("\n\n") >= 3:
                break
    blocks = text.split("\n\n")
    assert blocks[0] == ": tickstream\nretry: 2000"
    assert blocks[1].startswith("event: ") and "\ndata: " in blocks[1], "a snapshot: no id"


async def test_symbols_health_and_metrics(replay_stack: Stack, http: httpx.AsyncClient) -> None:
    base = replay_stack.base_url
    symbols = (await http.get(f"{base}/symbols")).json()
    assert [s["symbol"] for s in symbols["symbols"]] == ["BTCUSDT", "ETHUSDT"]
    assert symbols["symbols"][0]["priceScale"] == 8
    assert (await http.get(f"{base}/healthz")).json() == {"status": "ok"}
    ready = (await http.get(f"{base}/readyz")).json()
    assert ready["status"] == "ready" and ready["epoch"] == symbols["epoch"]
    metrics = (await http.get(f"{base}/metrics")).text
    for name in (
        "tickstream_edge_open_streams",
        "tickstream_edge_upstreams",
        "tickstream_edge_feed_ready 1.0",
    ):
        assert name in metrics


async def test_openapi_documents_sse_routes_and_page_uses_one_eventsource(
    replay_stack: Stack, http: httpx.AsyncClient
) -> None:
    document = (await http.get(f"{replay_stack.base_url}/openapi.json")).json()
    for path in ("/sse/{symbol}", "/sse"):
        content = document["paths"][path]["get"]["responses"]["200"]["content"]
        assert "text/event-stream" in content
    page = await http.get(f"{replay_stack.base_url}/")
    assert page.headers["content-type"].startswith("text/html")
    assert page.text.count("new EventSource(") == 1
    assert "http://" not in page.text and "https://" not in page.text, "no CDN, no third party"
