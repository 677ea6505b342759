"""``--workers 2``: two edge processes on one port (SO_REUSEPORT), each a whole edge. Both
answer and stream; a client resumes on the other worker with nothing missed or repeated; SIGTERM
to the parent drains both workers and the parent exits 0 (issue 11)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from tests.conftest import Stack
from tests.integration.test_resume import assert_contiguous, assert_resumed_after
from tests.support import ServiceProcess, SseEvent, iter_events, process_alive, start_edge

WORKER_HEADER = "X-Edge-Worker"
ATTEMPTS = 60  # new connections tried to reach a given worker: each lands on it about half the time
PATH = "/sse?symbols=BTCUSDT,ETHUSDT"
BEFORE, AFTER = 50, 1_000
DRAIN_S = 15.0  # the parent's bound: the workers' drain (13 s at most) and a margin


@pytest.fixture(scope="module")
def edge(live_stack: Stack) -> Iterator[ServiceProcess]:
    """Two workers in front of the live stack's feed (the bundled data replayed at 4x, looped)."""
    edge = start_edge(live_stack.feed.port, "--workers", "2")
    try:
        yield edge
    finally:
        edge.stop()


def base_url(edge: ServiceProcess) -> str:
    return f"http://127.0.0.1:{edge.port}"


async def worker_pids(http: httpx.AsyncClient, edge: ServiceProcess) -> set[int]:
    """The pids of both workers, from ``/healthz`` on new connections (``http`` keeps none)."""
    pids: set[int] = set()
    for _ in range(ATTEMPTS):
        response = await http.get(base_url(edge) + "/healthz")
        assert response.status_code == 200 and response.json()["status"] == "ok"
        pids.add(int(response.headers[WORKER_HEADER]))
        if len(pids) == 2:
            return pids
    raise AssertionError(f"only worker {pids} answered {ATTEMPTS} new connections")


@contextlib.asynccontextmanager
async def stream_on(
    http: httpx.AsyncClient,
    url: str,
    wanted: Callable[[int], bool],
    headers: dict[str, str] | None = None,
) -> AsyncIterator[tuple[int, httpx.Response]]:
    """An SSE response from a worker whose pid is ``wanted`` (new connections until one is)."""
    for _ in range(ATTEMPTS):
        async with http.stream("GET", url, headers=headers) as response:
            assert response.status_code == 200, await response.aread()
            pid = int(response.headers[WORKER_HEADER])
            if wanted(pid):
                yield pid, response
                return
    raise AssertionError(f"no wanted worker answered {url} in {ATTEMPTS} connections")


async def ticks(response: httpx.Response, count: int, within: float = 30) -> list[SseEvent]:
    """The next ``count`` trade and quote events; AssertionError on a reset."""
    events: list[SseEvent] = []
    async with asyncio.timeout(within):
        async for event in iter_events(response):
            assert event.event != "reset", event.data
            if event.event in ("trade", "quote"):
                events.append(event)
                if len(events) >= count:
                    break
    return events


async def test_both_workers_answer_and_stream(
    edge: ServiceProcess, http: httpx.AsyncClient
) -> None:
    pids = await worker_pids(http, edge)
    assert edge.popen.pid not in pids, "the parent only supervises"
    for pid in pids:
        async with stream_on(http, base_url(edge) + "/sse/BTCUSDT", pid.__eq__) as (_, response):
            assert response.headers["content-type"].startswith("text/event-stream")
            assert len(await ticks(response, 5)) == 5
    assert len(edge.output().split("edge_service listening on")) == 2, "one start-up line"


async def _reference(
    http: httpx.AsyncClient, url: str, ready: asyncio.Event, count: int
) -> list[SseEvent]:
    async with http.stream("GET", url) as response:
        assert response.status_code == 200
        ready.set()
        return await ticks(response, count, within=90)


async def test_a_client_resumes_on_the_other_worker_missing_and_repeating_nothing(
    edge: ServiceProcess, http: httpx.AsyncClient
) -> None:
    url = base_url(edge) + PATH
    ready = asyncio.Event()
    reference = asyncio.create_task(_reference(http, url, ready, BEFORE + AFTER + 3_000))
    await ready.wait()

    async with stream_on(http, url, lambda _: True) as (first_pid, response):
        first = await ticks(response, BEFORE)
    last_seen = first[-1]
    await asyncio.sleep(1.0)  # ticks flow meanwhile: the resume crosses history, then live
    resume = {"Last-Event-ID": str(last_seen.id)}
    async with stream_on(http, url, first_pid.__ne__, resume) as (second_pid, response):
        resumed = await ticks(response, AFTER)
    assert second_pid != first_pid

    assert len(resumed) == AFTER
    assert_resumed_after(await reference, last_seen, resumed)
    assert_contiguous(first + resumed)


async def test_a_killed_worker_is_replaced_on_the_same_port(
    edge: ServiceProcess, http: httpx.AsyncClient
) -> None:
    killed, kept = sorted(await worker_pids(http, edge))
    os.kill(killed, signal.SIGKILL)
    edge.wait_for_line(rf"edge worker \d \(pid {killed}\) exited with -9; restarting it")
    edge.wait_for_line(r"edge worker \d \(pid \d+\) serves")
    assert kept in await worker_pids(http, edge) and killed not in await worker_pids(http, edge)


async def _until_end(response: httpx.Response, flowing: asyncio.Event) -> list[SseEvent]:
    """Every event to the stream's end; ``flowing`` is set at the first tick."""
    events: list[SseEvent] = []
    async for event in iter_events(response):
        events.append(event)
        if event.event in ("trade", "quote"):
            flowing.set()
    return events


async def test_sigterm_to_the_parent_drains_both_workers_and_exits_0(
    live_stack: Stack, http: httpx.AsyncClient
) -> None:
    edge = start_edge(live_stack.feed.port, "--workers", "2")
    try:
        pids = await worker_pids(http, edge)
        url = base_url(edge) + "/sse/BTCUSDT"
        async with contextlib.AsyncExitStack() as streams:
            ends, flowing = [], []
            for pid in pids:  # one open stream on each worker
                _, response = await streams.enter_async_context(stream_on(http, url, pid.__eq__))
                flowing.append(asyncio.Event())
                ends.append(asyncio.create_task(_until_end(response, flowing[-1])))
            async with asyncio.timeout(30):
                for event in flowing:
                    await event.wait()
            edge.signal(signal.SIGTERM)
            finals = [events[-1] for events in await asyncio.wait_for(asyncio.gather(*ends), 30)]
        exit_code = await asyncio.to_thread(edge.popen.wait, DRAIN_S)
        assert exit_code == 0, edge.output()
        for final in finals:
            assert final.event == "disconnect" and json.loads(final.data)["reason"] == "shutdown"
        assert not [pid for pid in pids if process_alive(pid)], "no worker outlives the parent"
        assert edge.output().count("Application shutdown complete") == 2
    finally:
        edge.kill()
