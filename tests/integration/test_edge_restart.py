"""An edge killed mid-stream: clients that reconnect to a new edge with their Last-Event-ID get
exactly the ticks they missed, from the feed's history, then live ticks (issue 3, behaviour 2)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Stack, running_stack
from tests.integration.test_resume import assert_contiguous
from tests.support import (
    BTC_FILE,
    ETH_FILE,
    SseEvent,
    collect,
    iter_events,
    replay_args,
    start_edge,
    start_feed,
)

TICKS = ("trade", "quote")


@pytest.fixture
def stack() -> Iterator[Stack]:
    yield from running_stack(replay_args(BTC_FILE, ETH_FILE, speed="4", loop=True))


async def _read_until_cut(http: httpx.AsyncClient, url: str, out: list[SseEvent]) -> None:
    try:
        async with http.stream("GET", url) as response:
            async for event in iter_events(response):
                out.append(event)
    except httpx.HTTPError:
        pass  # the edge died under us


async def test_clients_resume_on_a_new_edge_without_gap_or_duplicate(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    path = "/sse?symbols=BTCUSDT,ETHUSDT"
    streams: list[list[SseEvent]] = [[] for _ in range(20)]
    readers = [
        asyncio.create_task(_read_until_cut(http, stack.base_url + path, out)) for out in streams
    ]
    async with asyncio.timeout(20):
        while not all(len(out) > 50 for out in streams):  # noqa: ASYNC110 - polling lists
            await asyncio.sleep(0.05)
    stack.edge.signal(signal.SIGKILL)
    await asyncio.wait_for(asyncio.gather(*readers), 20)
    await asyncio.sleep(1.0)  # ticks keep flowing on the feed meanwhile

    stack.edge = start_edge(stack.feed.port)
    for out in streams:
        ticks = [e for e in out if e.event in TICKS]
        resumed = await collect(
            http,
            stack.base_url + path,
            500,
            headers={"Last-Event-ID": str(ticks[-1].id)},
        )
        assert not [e for e in resumed if e.event == "reset"]
        assert_contiguous(ticks + [e for e in resumed if e.event in TICKS])


@pytest.mark.parametrize(
    ("cursor", "reason"),
    [
        ("0123456789abcdef-10", "epoch_changed"),
        ("{epoch}-99999999999", "offset_ahead"),
        ("not-a-cursor", "malformed_cursor"),
    ],
)
async def test_unusable_last_event_id_gives_reset_then_live_ticks(
    stack: Stack, http: httpx.AsyncClient, cursor: str, reason: str
) -> None:
    epoch = (await http.get(f"{stack.base_url}/symbols")).json()["epoch"]
    events = await collect(
        http,
        f"{stack.base_url}/sse/BTCUSDT",
        20,
        headers={"Last-Event-ID": cursor.format(epoch=epoch)},
    )
    assert events[0].event == "reset"
    assert f'"reason":"{reason}"' in events[0].data
    assert events[0].id is not None and events[0].id.startswith(epoch)
    assert len([e for e in events if e.event in TICKS]) == 20


async def test_resume_point_older_than_the_history_gives_offset_too_old_reset(
    http: httpx.AsyncClient,
) -> None:
    feed = start_feed(*replay_args(BTC_FILE, speed="0"), "--history-size", "1000")
    edge = start_edge(feed.port)
    try:
        base = f"http://127.0.0.1:{edge.port}"
        epoch = (await http.get(f"{base}/symbols")).json()["epoch"]
        async with (
            asyncio.timeout(20),
            http.stream(
                "GET", f"{base}/sse/BTCUSDT", headers={"Last-Event-ID": f"{epoch}-5"}
            ) as response,
        ):
            first = await anext(iter_events(response))
        assert first.event == "reset"
        assert '"reason":"offset_too_old"' in first.data
    finally:
        edge.stop()
        feed.stop()
