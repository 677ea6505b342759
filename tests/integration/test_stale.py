"""A dead source must not look live (issue 10, acceptance 6): when a source stops, the SSE
stream says `status: stale` for its symbols within the stale time, the metrics show the age,
/readyz names the source, and all of it clears when ticks flow again."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import textwrap

import httpx
import jsonschema

from tests.exchange_server import ExchangeServer, recorded_messages, recorded_snapshots
from tests.support import (
    BTC_FILE,
    ROOT,
    ServiceProcess,
    SseEvent,
    iter_events,
    services,
    start_edge,
    start_feed,
)

STALE_AFTER = 1.5


def gauge(text: str, name: str, symbol: str) -> float | None:
    match = re.search(rf'^{name}{{symbol="{re.escape(symbol)}"}} (\S+)$', text, re.MULTILINE)
    return float(match[1]) if match else None


async def until_state(
    events: asyncio.Queue[SseEvent], state: str, within: float
) -> tuple[SseEvent, list[SseEvent]]:
    """The next ``status`` event with ``state``, and the events before it."""
    before: list[SseEvent] = []
    async with asyncio.timeout(within):
        while True:
            event = await events.get()
            if event.event == "status" and json.loads(event.data)["state"] == state:
                return event, before
            before.append(event)


async def readyz_until(http: httpx.AsyncClient, base: str, status: int) -> httpx.Response:
    """/readyz once it answers ``status`` (the edge polls the feed's sources every 0.5 s)."""
    async with asyncio.timeout(5):
        while (response := await http.get(f"{base}/readyz")).status_code != status:  # noqa: ASYNC110 - HTTP polling
            await asyncio.sleep(0.1)
    return response


async def follow_into(url: str, events: asyncio.Queue[SseEvent]) -> None:
    async with httpx.AsyncClient(timeout=60) as http, http.stream("GET", url) as response:
        assert response.status_code == 200
        async for event in iter_events(response):
            await events.put(event)


async def check_stale_then_live(
    edge: ServiceProcess,
    feed: ServiceProcess,
    symbol: str,
    source: str,
    stop: object,
    restart: object,
) -> None:
    """Follow ``symbol`` on the edge; ``stop()`` the source and expect stale everywhere,
    ``restart()`` it and expect live everywhere."""
    base = f"http://127.0.0.1:{edge.port}"
    events: asyncio.Queue[SseEvent] = asyncio.Queue()
    follower = asyncio.create_task(follow_into(f"{base}/sse/{symbol}", events))
    try:
        async with asyncio.timeout(20):
            while (await events.get()).event not in ("trade", "quote"):
                pass
        await asyncio.to_thread(stop)  # type: ignore[arg-type]
        stale, _ = await until_state(events, "stale", within=STALE_AFTER + 3)
        payload = json.loads(stale.data)
        assert payload["symbol"] == symbol and payload["lastTickTime"].endswith("Z")
        async with httpx.AsyncClient(timeout=5) as http:
            schema = (await http.get(f"{base}/schemas/status.json")).json()
        jsonschema.validate(payload, schema, format_checker=jsonschema.FormatChecker())
        async with httpx.AsyncClient(timeout=5) as http:
            edge_metrics = (await http.get(f"{base}/metrics")).text
            feed_metrics = (await http.get(f"http://127.0.0.1:{feed.metrics_port}/metrics")).text
            ready = await readyz_until(http, base, 503)
        age = gauge(edge_metrics, "tickstream_edge_symbol_last_tick_age_seconds", symbol)
        assert age is not None and age > STALE_AFTER
        assert gauge(edge_metrics, "tickstream_edge_symbol_stale", symbol) == 1.0
        feed_age = gauge(feed_metrics, "tickstream_feed_symbol_last_tick_age_seconds", symbol)
        assert feed_age is not None and feed_age > STALE_AFTER
        assert ready.status_code == 503 and source in ready.json()["sourcesDown"]
        await asyncio.to_thread(restart)  # type: ignore[arg-type]
        live, before = await until_state(events, "live", within=20)
        jsonschema.validate(json.loads(live.data), schema)
        assert not [e for e in before if e.event in ("trade", "quote")], "live comes first"
        async with asyncio.timeout(10):
            while (await events.get()).event not in ("trade", "quote"):
                pass
        async with httpx.AsyncClient(timeout=5) as http:
            edge_metrics = (await http.get(f"{base}/metrics")).text
            ready = await readyz_until(http, base, 200)
        assert gauge(edge_metrics, "tickstream_edge_symbol_stale", symbol) == 0.0
        assert ready.status_code == 200 and source not in ready.json()["sourcesDown"]
    finally:
        follower.cancel()


async def test_a_paused_exchange_makes_its_symbols_stale_until_ticks_return() -> None:
    messages = recorded_messages([BTC_FILE], 6_000)
    snapshots = recorded_snapshots([BTC_FILE])
    with ExchangeServer(messages, rate=150, snapshots=snapshots) as exchange:
        feed = start_feed(
            "--source", "binance", "--symbols", "BTCUSDT", "--binance-url", exchange.url,
            "--binance-rest-url", exchange.rest_url, "--stale-after", str(STALE_AFTER),
        )  # fmt: skip
        with services(feed, start_edge(feed.port)) as (_, edge):
            await check_stale_then_live(
                edge, feed, "BTCUSDT", "binance", exchange.pause, exchange.resume
            )


PRODUCER = textwrap.dedent(
    """
    import asyncio, sys, grpc
    from tickstream.v1 import ingest_pb2, ingest_pb2_grpc, tick_pb2

    async def main(target, start):
        async with grpc.aio.insecure_channel(target) as channel:
            call = ingest_pb2_grpc.IngestServiceStub(channel).Publish(
                metadata=(("tickstream-producer", "pricer"),))
            n = start
            while True:
                n += 1
                body = tick_pb2.Trade(price=f"{n}.5", size="1", trade_id=str(n))
                draft = ingest_pb2.TickDraft(symbol="PRICER.X", trade=body, dedup_id=str(n))
                await call.write(ingest_pb2.PublishRequest(ticks=[draft]))
                await call.read()
                await asyncio.sleep(0.02)

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


async def test_a_killed_producer_makes_its_symbols_stale_until_it_returns() -> None:
    feed = start_feed("--source", "none", "--stale-after", str(STALE_AFTER))
    producers: list[subprocess.Popen[bytes]] = []

    def run_producer() -> None:
        command = [
            sys.executable,
            "-c",
            PRODUCER,
            f"127.0.0.1:{feed.port}",
            str(len(producers) * 100_000),
        ]
        producers.append(subprocess.Popen(command, cwd=ROOT))

    def kill_producer() -> None:
        producers[-1].kill()
        producers[-1].wait()

    run_producer()
    try:
        with services(feed, start_edge(feed.port)) as (_, edge):
            await wait_for_symbol(edge, "PRICER.X")
            await check_stale_then_live(
                edge, feed, "PRICER.X", "publish:pricer", kill_producer, run_producer
            )
    finally:
        for producer in producers:
            producer.kill()
            producer.wait()


async def wait_for_symbol(edge: ServiceProcess, symbol: str) -> None:
    async with asyncio.timeout(20), httpx.AsyncClient(timeout=5) as http:
        while symbol not in (await http.get(f"http://127.0.0.1:{edge.port}/symbols")).text:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
