"""Acceptance 3: many SSE clients of one symbol share one upstream Subscribe on the feed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Stack, running_stack
from tests.support import BTC_FILE, ETH_FILE, collect, metric_value, replay_args

CLIENTS = 50
EVENTS = 1_500
SUBSCRIBES = "tickstream_feed_subscribe_requests_total"


@pytest.fixture
def fresh_stack() -> Iterator[Stack]:
    """A stack of its own, so the feed's Subscribe count starts at zero."""
    yield from running_stack(replay_args(BTC_FILE, ETH_FILE, speed="4", loop=True))


async def test_fifty_clients_cause_one_subscribe_and_see_identical_events(
    fresh_stack: Stack, http: httpx.AsyncClient
) -> None:
    assert metric_value(fresh_stack.feed, SUBSCRIBES) == 0
    url = f"{fresh_stack.base_url}/sse/BTCUSDT"
    streams = await asyncio.gather(*(collect(http, url, EVENTS, within=60) for _ in range(CLIENTS)))
    assert metric_value(fresh_stack.feed, SUBSCRIBES) == 1, "one upstream for all 50 clients"

    sequences = [[(e.id, e.event, e.data) for e in events] for events in streams]
    first = max(int(seq[0][0].rsplit("-", 1)[1]) for seq in sequences)
    last = min(int(seq[-1][0].rsplit("-", 1)[1]) for seq in sequences)
    windows = [
        [item for item in seq if first <= int(item[0].rsplit("-", 1)[1]) <= last]
        for seq in sequences
    ]
    assert len(windows[0]) >= 500, "the clients overlap on a long common stretch"
    for window in windows[1:]:
        assert window == windows[0], "every client sees the same events, in the same order"
