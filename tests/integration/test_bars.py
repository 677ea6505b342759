"""Bars end to end: the feed's 1s and 1m bars of BTCUSDT's replay against bars computed here from
the file's trades, over SSE (with a resume across an edge restart) and ``GET /bars`` (issue 13,
acceptance 3 and 5)."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.conftest import BARS, Stack
from tests.support import (
    BTC_FILE,
    SseEvent,
    collect,
    iter_events,
    replay_args,
    services,
    start_edge,
    start_feed,
)

INTERVALS = {"1s": 1_000, "1m": 60_000}  # ms
Bar = dict[str, object]


def expected_bars(path: Path) -> dict[tuple[str, int], Bar]:
    """Every (interval, start ms) bar of the file's trades, by trade time ``T``: open, high,
    low, close as recorded, volumes as exact decimal sums, the trade count."""
    bars: dict[tuple[str, int], Bar] = {}
    with gzip.open(path, "rt") as lines:
        for line in lines:
            message = json.loads(line.partition(" ")[2])
            if not message.get("stream", "").endswith("@trade"):
                continue
            trade = message["data"]
            price, size = trade["p"], trade["q"]
            for interval, length in INTERVALS.items():
                start = trade["T"] - trade["T"] % length
                bar = bars.get((interval, start))
                if bar is None:
                    bar = bars[(interval, start)] = {
                        "open": price, "high": price, "low": price,
                        "volume": Decimal(0), "quoteVolume": Decimal(0), "trades": 0,
                    }  # fmt: skip
                if Decimal(price) > Decimal(bar["high"]):  # type: ignore[arg-type]
                    bar["high"] = price
                if Decimal(price) < Decimal(bar["low"]):  # type: ignore[arg-type]
                    bar["low"] = price
                bar["close"] = price
                bar["volume"] += Decimal(size)  # type: ignore[operator]
                bar["quoteVolume"] += Decimal(price) * Decimal(size)  # type: ignore[operator]
                bar["trades"] += 1  # type: ignore[operator]
    return bars


def as_expected(bar: dict) -> tuple[tuple[str, int], Bar]:
    """A bar of the edge's JSON as (interval, start ms) and the fields ``expected_bars`` has."""
    start = datetime.fromisoformat(bar["start"].removesuffix("Z")).replace(tzinfo=UTC)
    key = (bar["interval"], int(start.timestamp() * 1000))
    fields = {name: bar[name] for name in ("open", "high", "low", "close")}
    fields["volume"] = Decimal(bar["volume"])
    fields["quoteVolume"] = Decimal(bar["quoteVolume"])
    fields["trades"] = int(bar["trades"])
    return key, fields


@pytest.fixture(scope="module")
def expected() -> dict[tuple[str, int], Bar]:
    return expected_bars(BTC_FILE)


def finals_of(events: list[SseEvent]) -> list[tuple[tuple[str, int], Bar]]:
    bars = [json.loads(e.data)["bar"] for e in events if e.event == "bar"]
    return [as_expected(bar) for bar in bars if bar.get("final")]


def closed(expected: dict[tuple[str, int], Bar]) -> set[tuple[str, int]]:
    """The bars a later trade closed: all but each interval's last."""
    last = {interval: max(s for i, s in expected if i == interval) for interval in INTERVALS}
    return {key for key in expected if key[1] != last[key[0]]}


async def test_final_bars_equal_bars_computed_from_the_trades(
    replay_stack: Stack, http: httpx.AsyncClient, expected: dict[tuple[str, int], Bar]
) -> None:
    """Acceptance 3: over BTCUSDT's whole replay every 1s and 1m bar a later trade closed
    arrives final exactly once, equal to the bar computed from the file's trades (OHLC strings,
    exact volumes, count); open updates of a bar come before its final."""
    want = closed(expected)
    url = f"{replay_stack.base_url}/sse/BTCUSDT?types=bar&intervals=1s,1m&last_event_id=earliest"
    events: list[SseEvent] = []
    async with http.stream("GET", url) as response:
        assert response.status_code == 200
        async for event in iter_events(response):
            events.append(event)
            if finals_of(events[-1:]) and len(finals_of(events)) >= len(want):
                break
    finals = finals_of(events)
    keys = [key for key, _ in finals]
    assert len(keys) == len(set(keys)) == len(want), "each final bar exactly once"
    assert set(keys) == want
    for key, fields in finals:
        assert fields == expected[key], key
    seen_final: set[tuple[str, int]] = set()
    for event in events:
        key, _ = as_expected(json.loads(event.data)["bar"])
        assert key not in seen_final, f"{key}: an update after its final"
        if json.loads(event.data)["bar"].get("final"):
            seen_final.add(key)


async def test_history_holds_only_the_intervals_asked_for(
    replay_stack: Stack, http: httpx.AsyncClient
) -> None:
    """``intervals=1m`` from ``earliest`` (the catch-up from history, as a resume is): 1m bars
    only, as live."""
    url = f"{replay_stack.base_url}/sse/BTCUSDT?types=bar&intervals=1m&last_event_id=earliest"
    events = await collect(http, url, 5, within=30, kinds=("bar",))
    assert {json.loads(e.data)["bar"]["interval"] for e in events if e.event == "bar"} == {"1m"}


async def test_bars_resume_by_last_event_id_across_an_edge_restart(
    expected: dict[tuple[str, int], Bar],
) -> None:
    """Read part of the bars, stop the edge, start another, resume with the last id: every final
    bar once across both streams, none missing."""
    want = closed(expected)
    feed = start_feed(*replay_args(BTC_FILE, speed="0"), *BARS)
    with services(feed):
        first_edge = start_edge(feed.port)
        path = "/sse/BTCUSDT?types=bar&intervals=1s,1m"
        async with httpx.AsyncClient(timeout=60) as http:
            with services(first_edge):
                url = f"http://127.0.0.1:{first_edge.port}{path}&last_event_id=earliest"
                before = await collect(http, url, 300, kinds=("bar",))
            last_id = [e.id for e in before if e.id][-1]
            second_edge = start_edge(feed.port)
            with services(second_edge):
                url = f"http://127.0.0.1:{second_edge.port}{path}"
                after: list[SseEvent] = []
                async with http.stream("GET", url, headers={"Last-Event-ID": last_id}) as r:
                    async for event in iter_events(r):
                        after.append(event)
                        if len(finals_of(before)) + len(finals_of(after)) >= len(want):
                            break
    keys = [key for key, _ in finals_of(before) + finals_of(after)]
    assert len(keys) == len(set(keys)) and set(keys) == want
    assert not any(e.event == "reset" for e in after)


async def test_bars_route_gives_recent_bars_and_clear_errors(
    replay_stack: Stack, http: httpx.AsyncClient, expected: dict[tuple[str, int], Bar]
) -> None:
    """Acceptance 5 and the chart's first paint: the last 500 final 1m bars (here all) then the
    open one; 404 problem for an unknown symbol; 400 for an unknown interval, a limit out of
    range or an unknown parameter."""
    base = replay_stack.base_url
    reply = (await http.get(f"{base}/bars/BTCUSDT?interval=1s&limit=10")).json()
    assert reply["symbol"] == "BTCUSDT" and reply["interval"] == "1s"
    bars = [as_expected(bar) for bar in reply["bars"]]
    seconds = sorted(key for key in expected if key[0] == "1s")
    assert [key for key, _ in bars] == seconds[-11:]
    for key, fields in bars[:-1]:
        assert fields == expected[key]
    assert reply["lastEventId"].startswith(reply["epoch"] + "-")
    assert len((await http.get(f"{base}/bars/BTCUSDT")).json()["bars"]) == 7  # 1m, 6 final
    unknown = await http.get(f"{base}/bars/NOPE")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/problem+json")
    for query in ("interval=5m", "interval=", "limit=0", "limit=5001", "limit=ten", "lmit=5"):
        response = await http.get(f"{base}/bars/BTCUSDT?{query}")
        assert response.status_code == 400, query
        assert response.headers["content-type"].startswith("application/problem+json")
    for query in ("intervals=5m&types=bar", "types=candle"):
        response = await http.get(f"{base}/sse/BTCUSDT?{query}")
        assert response.status_code == 400, query
