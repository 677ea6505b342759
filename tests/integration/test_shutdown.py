"""Graceful shutdown: SIGTERM ends every stream with a reason, and the process exits
(issue 3, behaviour 6)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest
from tickstream.v1 import feed_pb2, feed_pb2_grpc

from tests.support import ROOT, SseEvent, iter_events, start_edge, start_feed

STREAMS = 500


async def _until_end(
    http: httpx.AsyncClient, url: str, opened: asyncio.Queue[None]
) -> list[SseEvent]:
    events: list[SseEvent] = []
    async with http.stream("GET", url) as response:
        assert response.status_code == 200
        await opened.put(None)
        async for event in iter_events(response):
            events.append(event)
    return events


async def test_edge_sigterm_sends_every_client_a_jittered_farewell_and_exits() -> None:
    feed = start_feed("--rate", "20")
    edge = start_edge(feed.port)
    try:
        limits = httpx.Limits(max_connections=STREAMS + 10)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            opened: asyncio.Queue[None] = asyncio.Queue()
            url = f"http://127.0.0.1:{edge.port}/sse?symbols=AAPL,MSFT"
            clients = [asyncio.create_task(_until_end(http, url, opened)) for _ in range(STREAMS)]
            async with asyncio.timeout(60):
                for _ in range(STREAMS):
                    await opened.get()
            edge.signal(signal.SIGTERM)
            results = await asyncio.wait_for(asyncio.gather(*clients), 30)
        # A drain is the planned end: 0, not uvicorn's re-raised SIGTERM (issue 14).
        assert edge.popen.wait(timeout=15) == 0
        assert "Application shutdown complete" in edge.output()
        retries = []
        for events in results:
            final = events[-1]
            assert final.event == "disconnect"
            assert json.loads(final.data)["reason"] == "shutdown"
            assert final.retry is not None and 2_000 <= final.retry <= 8_000
            retries.append(final.retry)
        assert len(set(retries)) > STREAMS // 4, "reconnects are spread out, not synchronized"
    finally:
        edge.kill()
        feed.stop()


async def test_feed_sigterm_ends_streams_with_unavailable_and_exits() -> None:
    feed = start_feed("--rate", "20")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{feed.port}") as channel:
            stub = feed_pb2_grpc.FeedServiceStub(channel)
            calls = [stub.Subscribe(feed_pb2.SubscribeRequest(symbols=["AAPL"])) for _ in range(20)]
            for call in calls:
                await call.read()  # the opening heartbeat: the stream is up
            feed.signal(signal.SIGTERM)
            for call in calls:
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    async with asyncio.timeout(10):
                        while await call.read() is not grpc.aio.EOF:
                            pass
                assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert feed.popen.wait(timeout=15) == 0
    finally:
        feed.kill()


def test_a_feed_whose_recording_is_missing_exits_2_with_one_line(tmp_path: Path) -> None:
    """A failed start says why in one line and exits non-zero, instead of staying up
    NOT_SERVING (issue 14)."""
    for path in (tmp_path / "missing.gz", _empty_recording(tmp_path)):
        result = subprocess.run(
            [sys.executable, "-m", "feed_service", "--port", "0", "--no-metrics",
             "--source", "replay", "--replay-path", str(path)],
            capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("feed_service: invalid configuration: the replay source failed")


def test_an_edge_whose_port_is_taken_exits_1_naming_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "edge_service", "--port", str(port)],
            capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"edge_service: [Errno 98] cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def _empty_recording(tmp_path: Path) -> Path:
    path = tmp_path / "empty.txt"
    path.write_text("1 {}\n")
    return path
