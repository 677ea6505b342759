"""Issue 11, acceptance 3: 300 clients of one symbol plus 20 stalled readers on one edge. Every
healthy client receives every tick exactly once, in order; the stalled ones get their quotes
conflated, then a ``slow_consumer`` disconnect."""

from __future__ import annotations

import asyncio
import json
import re
import socket

import httpx

from tests.integration.test_slow_consumers import edge_gauge
from tests.support import start_edge, start_feed

HEALTHY = 300
STALLED = 20
RATE = 100  # ticks/s: 30,000 events/s to the healthy clients, read by this one test process
TARGET_TICKS = 1000  # each healthy client reads until it has passed this many ticks after joining
EVENT = re.compile(rb"id: [^\n]*-(\d+)\nevent: (\w+)\ndata: ([^\n]*)\n\n")


async def _connect(
    port: int, receive_buffer: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw HTTP/1.1 SSE request; keep the writer: the connection closes when it is freed."""
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"GET /sse/AAA HTTP/1.1\r\nHost: test\r\n\r\n")
    await writer.drain()
    return reader, writer


async def _healthy(port: int, ready: asyncio.Event) -> list[tuple[int, str]]:
    """(offset, event type) of every tick event, read until TARGET_TICKS past the first."""
    reader, writer = await _connect(port)
    events: list[tuple[int, str]] = []
    pending = b""
    while not events or events[-1][0] < events[0][0] + TARGET_TICKS:
        chunk = await reader.read(65536)
        assert chunk, f"the edge closed a healthy stream: {pending[:300]!r}"
        pending += chunk
        end = 0
        for match in EVENT.finditer(pending):
            events.append((int(match.group(1)), match.group(2).decode()))
            end = match.end()
        pending = pending[end:]
        ready.set()
    writer.close()
    return events


async def _stalled_then_read(port: int, stall: asyncio.Event) -> list[tuple[str, dict[str, str]]]:
    """A reader that reads nothing until ``stall`` is set, then everything: (event, data)."""
    reader, writer = await _connect(port, receive_buffer=4096)
    await stall.wait()
    raw = b""
    async with asyncio.timeout(60):
        while chunk := await reader.read(65536):
            raw += chunk
            if re.search(rb"event: disconnect\ndata: [^\n]*\n", raw):
                break
    writer.close()
    return [(m.group(2).decode(), json.loads(m.group(3))) for m in EVENT.finditer(raw)] + [
        ("disconnect", json.loads(m.group(1)))
        for m in re.finditer(rb"event: disconnect\ndata: ([^\n]*)\n", raw)
    ]


def _slow_consumer_drops(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    line = 'tickstream_edge_disconnects_total{reason="slow_consumer"} '
    return next(float(row.split()[-1]) for row in text.splitlines() if row.startswith(line))


async def test_300_clients_get_every_tick_once_while_20_stalled_are_conflated_and_dropped() -> None:
    feed = start_feed("--symbols", "AAA", "--rate", str(RATE))
    edge = start_edge(
        feed.port,
        *("--client-queue-events", "100", "--socket-send-buffer", "16384"),
        *("--max-streams-per-client", "0"),
    )
    try:
        stall = asyncio.Event()
        stalled = [
            asyncio.create_task(_stalled_then_read(edge.port, stall)) for _ in range(STALLED)
        ]
        ready = [asyncio.Event() for _ in range(HEALTHY)]
        healthy = [asyncio.create_task(_healthy(edge.port, r)) for r in ready]
        async with asyncio.timeout(120):
            streams = await asyncio.gather(*healthy)
        async with asyncio.timeout(60):  # every stalled reader is dropped while it stalls
            while _slow_consumer_drops(edge.port) < STALLED:  # noqa: ASYNC110
                await asyncio.sleep(0.5)
        stall.set()
        async with asyncio.timeout(90):
            late = await asyncio.gather(*stalled)
        for events in streams:
            offsets = [offset for offset, _ in events]
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), (
                "every tick once, in order"
            )
        for events in late:
            assert events[-1][0] == "disconnect"
            assert events[-1][1]["reason"] == "slow_consumer"
            trades = [int(data["sequence"]) for kind, data in events if kind == "trade"]
            assert trades == list(range(trades[0], trades[0] + len(trades))), "no trade dropped"
        assert edge_gauge(edge.port, "tickstream_edge_conflated_quotes_total") > 0
    finally:
        edge.stop()
        feed.stop()
