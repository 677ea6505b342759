"""Regressions found by breaking the system; each test names the fault it pins."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import grpc
import httpx
import pytest
from tickstream.v1 import feed_pb2, feed_pb2_grpc

from tests.conftest import Stack, running_stack
from tests.support import collect


@pytest.fixture
def busy_stack() -> Iterator[Stack]:
    yield from running_stack(["--symbols", "AAA,BBB", "--rate", "3000", "--history-size", "3000"])


async def test_multi_symbol_snapshot_is_followed_by_contiguous_ticks(
    busy_stack: Stack, http: httpx.AsyncClient
) -> None:
    """Fault: a multi-symbol stream started at the highest upstream watermark, so a lagging
    symbol's ticks between its snapshot and that point were dropped (sequence jumped)."""
    url = f"{busy_stack.base_url}/sse?symbols=AAA,BBB&snapshot=true"
    for events in await asyncio.gather(*(collect(http, url, 400) for _ in range(30))):
        last: dict[tuple[str, str], int] = {}
        for event in events:
            if event.event not in ("trade", "quote"):
                continue
            tick = json.loads(event.data)
            key, sequence = (tick["symbol"], event.event), int(tick["sequence"])
            if key in last:
                assert sequence == last[key] + 1, f"{key}: {last[key]} then {sequence}"
            last[key] = sequence
        ids = [e.offset for e in events if e.id]
        assert ids == sorted(set(ids))


async def test_earliest_on_a_full_moving_history_replays_without_reset(busy_stack: Stack) -> None:
    """Fault: the oldest retained offset was evicted while the opening messages were written,
    and the subscriber got a slow-consumer Reset instead of the history."""
    async with grpc.aio.insecure_channel(busy_stack.feed_target) as channel:
        stub = feed_pb2_grpc.FeedServiceStub(channel)

        async def first_events() -> list[str]:
            call = stub.Subscribe(feed_pb2.SubscribeRequest(symbols=["AAA"], earliest=True))
            kinds = []
            async with asyncio.timeout(10):
                async for response in call:
                    kinds.append(response.WhichOneof("event"))
                    if len(kinds) == 3:
                        break
            call.cancel()
            return kinds

        for kinds in await asyncio.gather(*(first_events() for _ in range(24))):
            assert "reset" not in kinds
