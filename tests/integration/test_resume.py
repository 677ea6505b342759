"""Acceptance 4: reconnecting with Last-Event-ID continues exactly after the last event seen,
on either backbone (issue 12)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.conftest import Stack
from tests.support import SseEvent, collect, iter_events

BEFORE = 50
AFTER = 2_000


async def _reference(
    http: httpx.AsyncClient, url: str, ready: asyncio.Event, count: int
) -> list[SseEvent]:
    events: list[SseEvent] = []
    async with asyncio.timeout(60), http.stream("GET", url) as response:
        assert response.status_code == 200
        async for event in iter_events(response):
            if event.event in ("trade", "quote"):
                events.append(event)
                ready.set()
                if len(events) >= count:
                    break
    return events


def assert_contiguous(events: list[SseEvent]) -> None:
    """Per (symbol, type), sequence numbers step by one: nothing missing or repeated."""
    last: dict[tuple[str, str], int] = {}
    for event in events:
        tick = json.loads(event.data)
        key = (tick["symbol"], event.event)
        sequence = int(tick["sequence"])
        if key in last:
            assert sequence == last[key] + 1, f"{key}: {last[key]} then {sequence}"
        last[key] = sequence


def assert_resumed_after(
    reference: list[SseEvent], last_seen: SseEvent, resumed: list[SseEvent]
) -> None:
    """``resumed`` is exactly what ``reference`` (an uninterrupted stream of the same URL) held
    after ``last_seen``: event k+1 first, the same ids and data, nothing missed or repeated."""
    start = [e.id for e in reference].index(last_seen.id) + 1
    expected = reference[start : start + len(resumed)]
    assert len(expected) == len(resumed), "the reference stream reaches as far"
    assert resumed[0].id == expected[0].id, "event k+1 comes next"
    assert [(e.id, e.data) for e in resumed] == [(e.id, e.data) for e in expected]


@pytest.mark.parametrize(
    "path", ["/sse/BTCUSDT", "/sse?symbols=BTCUSDT,ETHUSDT"], ids=["one-symbol", "two-symbols"]
)
async def test_reconnect_with_last_event_id_gets_event_k_plus_1_next(
    backbone_live_stack: Stack, http: httpx.AsyncClient, path: str
) -> None:
    url = backbone_live_stack.base_url + path
    ready = asyncio.Event()
    reference = asyncio.create_task(_reference(http, url, ready, BEFORE + AFTER + 3_000))
    await ready.wait()

    first = await collect(http, url, BEFORE)
    ticks = [e for e in first if e.event in ("trade", "quote")]
    last_seen = ticks[-1]
    await asyncio.sleep(1.0)  # ticks flow meanwhile: the resume crosses history, then live
    resumed = await collect(http, url, AFTER, headers={"Last-Event-ID": str(last_seen.id)})
    resumed_ticks = [e for e in resumed if e.event in ("trade", "quote")]
    assert not [e for e in resumed if e.event == "reset"], "a point in history is honoured"

    assert_resumed_after(await reference, last_seen, resumed_ticks)
    assert_contiguous(ticks + resumed_ticks)
