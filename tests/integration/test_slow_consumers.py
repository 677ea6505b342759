"""Slow consumers do not hurt the others: stalled clients are dropped, a client behind gets its
quotes conflated and every trade, then a disconnect it can resume from (issue 3, behaviour 3).
How much a stall costs healthy clients in latency is measured by bench/slow_consumers.py."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx

from tests.integration.test_resume import assert_contiguous
from tests.support import SseEvent, collect, follow, start_edge, start_feed

STALLED = 20
HEALTHY = 3


def edge_gauge(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))


async def _open_raw(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client with a tiny receive buffer, so the edge's writes back up quickly."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


def _has_whole_disconnect(raw: bytes) -> bool:
    """True once the disconnect event has arrived whole: a read can end between its lines."""
    _, found, rest = raw.partition(b"event: disconnect")
    return bool(found) and b"\n\n" in rest


def _events(raw: bytes) -> list[SseEvent]:
    """Events of a raw chunked HTTP response (blocks split by a chunk-size line are skipped)."""
    body = raw.split(b"\r\n\r\n", 1)[1].decode(errors="replace")
    events = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields and "data" in fields:
            try:
                json.loads(fields["data"])
            except json.JSONDecodeError:
                continue
            events.append(SseEvent(fields["event"], fields["data"], fields.get("id")))
    return events


async def test_stalled_and_slow_clients_do_not_hurt_healthy_ones() -> None:
    feed = start_feed("--symbols", "AAA", "--rate", "2000")
    edge = start_edge(feed.port, "--client-queue-events", "1000", "--send-timeout", "10")
    base = f"http://127.0.0.1:{edge.port}"
    try:
        stop = asyncio.Event()
        healthy = [[] for _ in range(HEALTHY)]  # type: list[list[SseEvent]]
        readers = [asyncio.create_task(follow(f"{base}/sse/AAA", out, stop)) for out in healthy]
        stalled = [await _open_raw(edge.port, "/sse/AAA") for _ in range(STALLED)]
        slow_reader, slow_writer = await _open_raw(edge.port, "/sse/AAA")
        await asyncio.sleep(4)  # the slow client reads nothing for 4 s, then everything
        raw = b""
        async with asyncio.timeout(30):
            while chunk := await slow_reader.read(65536):
                raw += chunk
                if _has_whole_disconnect(raw):
                    break
        events = _events(raw)
        assert events[-1].event == "disconnect"
        assert json.loads(events[-1].data)["reason"] == "slow_consumer"
        ticks = [e for e in events if e.event in ("trade", "quote")]
        trades = [int(json.loads(e.data)["sequence"]) for e in ticks if e.event == "trade"]
        assert trades == list(range(trades[0], trades[0] + len(trades))), "no trade is dropped"
        # It resumes from the last event it saw, like any reconnect: nothing is lost.
        async with httpx.AsyncClient(timeout=30) as http:
            resumed = await collect(
                http, f"{base}/sse/AAA", 300, headers={"Last-Event-ID": str(ticks[-1].id)}
            )
        assert_contiguous([*ticks[-50:], *[e for e in resumed if e.event in ("trade", "quote")]])
        assert edge_gauge(edge.port, "tickstream_edge_conflated_quotes_total") > 0

        async with asyncio.timeout(30):  # the stalled clients are found and freed
            while edge_gauge(edge.port, "tickstream_edge_open_streams") > HEALTHY:  # noqa: ASYNC110
                await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*readers), 30)
        for out in healthy:
            ticks = [e for e in out if e.event in ("trade", "quote")]
            assert len(ticks) > 5_000, "healthy clients kept receiving"
            assert not [e for e in out if e.event in ("disconnect", "reset")]
            assert_contiguous(ticks)
        for _, writer in stalled:
            writer.close()
        slow_writer.close()
    finally:
        edge.stop()
        feed.stop()
