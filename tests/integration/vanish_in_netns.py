"""Run inside a fresh network namespace (``unshare -n``, as root): a client that vanishes without
FIN or RST is detected by the edge and freed. Exits 0 on success, prints what it saw.

Inside the namespace only its own loopback exists. The victim connects from 127.0.0.2; then that
address stops being local and gets a blackhole route, so every packet the edge sends it is
silently discarded and never acknowledged, exactly as when a laptop lid closes or a phone loses
its network: no FIN, no RST, just silence.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support import iter_events, start_edge, start_feed

SEND_TIMEOUT_S = 3


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def gauge(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    prefix = "tickstream_edge_open_streams "
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(prefix))


async def healthy_reader(url: str, stop: asyncio.Event) -> int:
    count = 0
    async with httpx.AsyncClient(timeout=60) as http, http.stream("GET", url) as response:
        async for event in iter_events(response):
            count += event.event in ("trade", "quote")
            if stop.is_set():
                return count
    return count


async def main() -> int:
    ip("link", "set", "lo", "up")
    feed = start_feed("--symbols", "AAA", "--rate", "500")
    edge = start_edge(feed.port, "--send-timeout", str(SEND_TIMEOUT_S), "--ping-interval", "1")
    try:
        stop = asyncio.Event()
        healthy = asyncio.create_task(healthy_reader(f"http://127.0.0.1:{edge.port}/sse/AAA", stop))
        victim = socket.create_connection(("127.0.0.1", edge.port), source_address=("127.0.0.2", 0))
        victim.sendall(b"GET /sse/AAA HTTP/1.1\r\nHost: t\r\n\r\n")
        victim.recv(65536)
        await asyncio.sleep(1)
        assert gauge(edge.port) == 2, "both clients are streaming"
        ip("route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local")
        ip("route", "replace", "local", "127.0.0.1/32", "dev", "lo", "table", "local")
        ip("route", "add", "blackhole", "127.0.0.2/32")
        dropped_at = time.monotonic()
        async with asyncio.timeout(SEND_TIMEOUT_S * 5):
            while gauge(edge.port) != 1:  # noqa: ASYNC110 - polling a gauge
                await asyncio.sleep(0.2)
        print(f"vanished client freed after {time.monotonic() - dropped_at:.1f}s")
        stop.set()
        received = await asyncio.wait_for(healthy, 30)
        assert received > 100, "the healthy client kept streaming"
        victim.close()
        return 0
    finally:
        edge.stop()
        feed.stop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
