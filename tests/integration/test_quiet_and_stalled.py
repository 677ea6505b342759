"""Quiet streams stay alive, and a silently dead (SIGSTOPped) feed is detected and survived
(issue 3, behaviour 5)."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx

from tests.integration.test_resume import assert_contiguous
from tests.support import (
    BTC_FILE,
    ETH_FILE,
    SseEvent,
    follow,
    replay_args,
    start_edge,
    start_feed,
    wait_for_status,
)


async def test_quiet_stream_gets_comment_heartbeats() -> None:
    """The replay ends at once (speed 0): after it, only heartbeats flow."""
    feed = start_feed(*replay_args(BTC_FILE, speed="0"))
    edge = start_edge(feed.port, "--ping-interval", "1")
    try:
        comments: list[float] = []
        async with (
            httpx.AsyncClient(timeout=30) as http,
            http.stream("GET", f"http://127.0.0.1:{edge.port}/sse/BTCUSDT") as response,
        ):
            async with asyncio.timeout(10):
                async for line in response.aiter_lines():
                    if line.startswith(": ping"):
                        comments.append(time.monotonic())
                        if len(comments) == 3:
                            break
        assert len(comments) == 3
    finally:
        edge.stop()
        feed.stop()


async def test_sigstopped_feed_is_detected_and_streams_continue_without_gap() -> None:
    feed = start_feed(*replay_args(BTC_FILE, ETH_FILE, speed="4", loop=True))
    edge = start_edge(feed.port, "--upstream-stall-timeout", "2")
    base = f"http://127.0.0.1:{edge.port}"
    try:
        out: list[SseEvent] = []
        stop = asyncio.Event()
        follower = asyncio.create_task(follow(f"{base}/sse?symbols=BTCUSDT,ETHUSDT", out, stop))
        async with asyncio.timeout(20):
            while len(out) < 50:  # noqa: ASYNC110 - polling a list
                await asyncio.sleep(0.05)
        feed.signal(signal.SIGSTOP)
        async with httpx.AsyncClient(timeout=5) as http:
            await wait_for_status(http, f"{base}/readyz", 503)
            stalled_at = len(out)
            await asyncio.sleep(4)  # past the stall timeout: the edge reopens its upstreams
            assert (await http.get(f"{base}/healthz")).status_code == 200
            feed.signal(signal.SIGCONT)
            await wait_for_status(http, f"{base}/readyz", 200)
        async with asyncio.timeout(30):
            while len(out) < stalled_at + 500:  # noqa: ASYNC110 - polling a list
                await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(follower, 30)
        assert not [e for e in out if e.event in ("reset", "disconnect")], "same epoch: no reset"
        assert_contiguous([e for e in out if e.event in ("trade", "quote")])
        assert "no message for" in edge.output(), "the stall was detected"
    finally:
        feed.signal(signal.SIGCONT)
        edge.stop()
        feed.stop()
