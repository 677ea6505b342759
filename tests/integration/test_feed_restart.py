"""A feed killed and restarted under streaming clients: the edge stays up, clients get one
reset then every tick of the new epoch from its first, and the reset's id is a complete cursor
(issue 3, behaviour 1; issue 12: nothing skipped after a reset)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Stack, running_stack
from tests.support import (
    LIVE_REPLAY,
    TICK_EVENTS,
    SseEvent,
    collect,
    first_sequences,
    follow_past_reset,
    metric_value,
    start_feed,
    wait_for_status,
)

FEED_ARGS = LIVE_REPLAY
CLIENTS = 100
SUBSCRIBES = "tickstream_feed_subscribe_requests_total"


@pytest.fixture
def restartable_stack() -> Iterator[Stack]:
    yield from running_stack(FEED_ARGS)


@pytest.mark.parametrize(
    "path", ["/sse/BTCUSDT", "/sse?symbols=BTCUSDT,ETHUSDT"], ids=["one", "two"]
)
async def test_feed_killed_and_restarted_under_clients(
    restartable_stack: Stack, http: httpx.AsyncClient, path: str
) -> None:
    stack = restartable_stack
    url = stack.base_url + path
    streams: list[list[SseEvent]] = [[] for _ in range(CLIENTS)]
    followers = [asyncio.create_task(follow_past_reset(http, url, out, 300)) for out in streams]
    async with asyncio.timeout(20):
        while not all(len(out) > 20 for out in streams):  # noqa: ASYNC110 - polling lists
            await asyncio.sleep(0.05)

    old_port = stack.feed.port
    stack.feed.signal(signal.SIGKILL)
    stack.feed.popen.wait()
    await wait_for_status(http, f"{stack.base_url}/readyz", 503)
    refused = await http.get(url)
    assert refused.status_code == 503
    assert refused.headers["retry-after"]
    assert refused.json()["type"].endswith("/feed-unavailable")

    stack.feed = start_feed(*FEED_ARGS, port=old_port)
    await wait_for_status(http, f"{stack.base_url}/readyz", 200)
    await asyncio.wait_for(asyncio.gather(*followers), 60)
    assert stack.edge.alive
    # One upstream per symbol came back, not one per client: no reconnect storm.
    assert metric_value(stack.feed, SUBSCRIBES) == path.count("USDT")

    for out in streams:
        resets = [i for i, e in enumerate(out) if e.event == "reset"]
        assert len(resets) == 1, "exactly one reset per stream"
        reset = out[resets[0]]
        assert '"reason":"epoch_changed"' in reset.data
        before = [e.offset for e in out[: resets[0]] if e.event in TICK_EVENTS]
        after = [e.offset for e in out[resets[0] + 1 :] if e.event in TICK_EVENTS]
        assert before == sorted(set(before)) and after == sorted(set(after))
        assert after[0] > reset.offset, "live ticks continue after the reset's cursor"
        # Nothing the restarted feed published before the edge reconnected is skipped: each
        # symbol's trades and quotes go on from sequence 1 of the new epoch.
        first = first_sequences(out[resets[0] + 1 :])
        assert set(first.values()) == {1}, first

    # The reset's id is a complete cursor: resuming from it gives exactly what the live
    # stream delivered after the reset, nothing skipped.
    out = streams[0]
    index = next(i for i, e in enumerate(out) if e.event == "reset")
    live_after = [e for e in out[index + 1 :] if e.event in TICK_EVENTS][:200]
    resumed = await collect(http, url, 200, headers={"Last-Event-ID": str(out[index].id)})
    assert [e.id for e in resumed if e.event in TICK_EVENTS] == [e.id for e in live_after]
