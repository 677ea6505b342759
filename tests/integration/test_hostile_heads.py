"""Hostile request heads handled by the edge alone (issue 14): a huge header is cut off with a
431 as its bytes arrive, an unfinished head is closed after --header-timeout, and a healthy
stream goes on meanwhile."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx

from tests.support import collect, services, start_edge, start_feed

HEAD_TIMEOUT_S = 1.0
HUGE = 100 * 1024 * 1024


def send_huge_header(port: int) -> tuple[int, bytes, float]:
    """Send a request whose one header is 100 MiB; (bytes the edge took, its reply, seconds)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: edge\r\nX-Huge: ")
        sent, chunk = 0, b"a" * 65_536
        try:
            while sent < HUGE:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the edge closed the connection: what we want
        sock.settimeout(5)
        try:
            reply = sock.recv(200)
        except OSError:
            reply = b""
    return sent, reply, time.monotonic() - started


def unfinished_head_lifetime(port: int) -> float:
    """Seconds until the edge closes a connection whose head never ends."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: edge\r\nX-Slow: ")
        started = time.monotonic()
        sock.settimeout(30)
        assert sock.recv(100) == b"", "closed without an answer"
        return time.monotonic() - started


async def test_huge_and_unfinished_heads_are_cut_off_while_a_stream_flows() -> None:
    feed = start_feed("--symbols", "AAA", "--rate", "100")
    with services(feed):
        edge = start_edge(feed.port, "--header-timeout", str(HEAD_TIMEOUT_S))
        with services(edge):
            base = f"http://127.0.0.1:{edge.port}"
            async with httpx.AsyncClient(timeout=30) as http:
                stream = asyncio.create_task(collect(http, f"{base}/sse/AAA", 300, within=30))
                sent, reply, took = await asyncio.to_thread(send_huge_header, edge.port)
                slow = await asyncio.gather(
                    *(asyncio.to_thread(unfinished_head_lifetime, edge.port) for _ in range(50))
                )
                events = await stream
                assert (await http.get(f"{base}/healthz")).status_code == 200
    assert reply.startswith(b"HTTP/1.1 431 "), reply
    # the edge stops reading at 32 KiB; the sockets' buffers take a few MiB more
    assert sent < 16 * 1024 * 1024, f"cut off after {sent} bytes, not after the 100 MiB"
    assert took < 5, took
    assert all(HEAD_TIMEOUT_S * 0.9 <= seconds < HEAD_TIMEOUT_S + 3 for seconds in slow), slow
    offsets = [e.offset for e in events if e.id is not None]
    assert len(offsets) >= 300 and offsets == sorted(set(offsets)), "the stream went on"
    print(
        f"\nhostile heads: 100 MiB header refused after {sent:,} bytes in {took:.2f} s; "
        f"50 unfinished heads closed after {min(slow):.2f}-{max(slow):.2f} s "
        f"(--header-timeout {HEAD_TIMEOUT_S}); a stream of 300 ticks meanwhile"
    )
