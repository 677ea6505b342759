"""Edges fail over between feed replicas (issue 12): with ``--feed-target A,B`` the edge reads A,
and when A dies its upstreams resubscribe on B at their position; ``/readyz`` stays ready while
any replica answers. With the in-process backbone each replica has a history (an epoch) of its
own, so the move is one ``reset`` (``epoch_changed``) followed by every tick of B's epoch from
its first; on a history the replicas share the same move needs no reset."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator

import httpx
import pytest

from tests.support import (
    LIVE_REPLAY,
    TICK_EVENTS,
    ServiceProcess,
    SseEvent,
    collect,
    first_sequences,
    follow_past_reset,
    services,
    start_edge,
    start_feed,
    wait_for_status,
)

FEED_ARGS = LIVE_REPLAY
CLIENTS = 20


@pytest.fixture
def replicas() -> Iterator[tuple[ServiceProcess, ...]]:
    """Feed replicas A and B, and an edge given both (A first)."""
    a, b = start_feed(*FEED_ARGS), start_feed(*FEED_ARGS)
    try:
        targets = f"127.0.0.1:{a.port},127.0.0.1:{b.port}"
        edge = start_edge(a.port, "--feed-target", targets)
    except BaseException:
        a.stop()
        b.stop()
        raise
    with services(a, b, edge) as started:
        yield started


async def test_upstreams_move_to_the_next_replica_when_one_dies(
    replicas: tuple[ServiceProcess, ...], http: httpx.AsyncClient
) -> None:
    a, b, edge = replicas
    base = f"http://127.0.0.1:{edge.port}"
    ready = (await http.get(f"{base}/readyz")).json()
    assert ready["feed"] == f"127.0.0.1:{a.port}"
    url = f"{base}/sse?symbols=BTCUSDT,ETHUSDT"
    streams: list[list[SseEvent]] = [[] for _ in range(CLIENTS)]
    followers = [asyncio.create_task(follow_past_reset(http, url, out, 200)) for out in streams]
    async with asyncio.timeout(20):
        while not all(len(out) > 20 for out in streams):  # noqa: ASYNC110 - polling lists
            await asyncio.sleep(0.05)

    a.signal(signal.SIGKILL)
    a.popen.wait()
    await asyncio.wait_for(asyncio.gather(*followers), 60)
    await wait_for_status(http, f"{base}/readyz", 200)
    assert (await http.get(f"{base}/readyz")).json()["feed"] == f"127.0.0.1:{b.port}"
    assert edge.alive

    for out in streams:
        resets = [i for i, e in enumerate(out) if e.event == "reset"]
        assert len(resets) == 1, "one reset: B's history is another epoch"
        assert '"reason":"epoch_changed"' in out[resets[0]].data
        before = [e.offset for e in out[: resets[0]] if e.event in TICK_EVENTS]
        after = [e.offset for e in out[resets[0] + 1 :] if e.event in TICK_EVENTS]
        assert before == sorted(set(before)) and after == sorted(set(after))
        # B's epoch from its first tick: each symbol's trades and quotes from sequence 1.
        assert set(first_sequences(out[resets[0] + 1 :]).values()) == {1}

    # New streams are served from B; with B gone too the edge is not ready.
    fresh = await collect(http, f"{base}/sse/BTCUSDT", 5)
    assert len([e for e in fresh if e.event in TICK_EVENTS]) == 5
    b.signal(signal.SIGKILL)
    b.popen.wait()
    await wait_for_status(http, f"{base}/readyz", 503)
    assert edge.alive
    # It still shuts down cleanly, closing every replica's channels.
    edge.signal(signal.SIGTERM)
    assert edge.popen.wait(timeout=15) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in edge.output()
