"""A lean SSE load client: N raw-socket connections to one URL, counting events and sampling
latency (now minus the tick's ingestTime) once per read. Prints one JSON line of figures.

Usage: python bench/sse_load.py HOST PORT PATH CLIENTS SECONDS
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from datetime import datetime

INGEST = re.compile(rb'"ingestTime":"([^"]+)"')


def _ns(stamp: bytes) -> int:
    text = stamp.decode()
    head, _, frac = text.rstrip("Z").partition(".")
    base = datetime.fromisoformat(head + "+00:00").timestamp()
    return int(base) * 1_000_000_000 + int((frac + "000000000")[:9])


async def client(host: str, port: int, path: str, stop: float, stats: dict[str, list[int]]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    events = 0
    latencies = stats["latency_us"]
    try:
        while time.monotonic() < stop:
            try:
                chunk = await asyncio.wait_for(reader.read(262_144), stop - time.monotonic())
            except TimeoutError:
                break
            if not chunk:
                break
            events += chunk.count(b"\nevent: ")
            stamps = INGEST.findall(chunk)
            if stamps:
                latencies.append((time.time_ns() - _ns(stamps[-1])) // 1000)
    finally:
        stats["events"].append(events)
        writer.close()


async def main() -> None:
    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    clients, seconds = int(sys.argv[4]), float(sys.argv[5])
    stats: dict[str, list[int]] = {"events": [], "latency_us": []}
    cpu0 = time.process_time()
    stop = time.monotonic() + seconds
    await asyncio.gather(*(client(host, port, path, stop, stats) for _ in range(clients)))
    latencies = sorted(stats["latency_us"]) or [0]
    total = sum(stats["events"])
    print(
        json.dumps(
            {
                "clients": clients,
                "seconds": seconds,
                "events": total,
                "events_per_s": round(total / seconds),
                "clients_with_no_events": sum(1 for e in stats["events"] if e == 0),
                "p50_ms": latencies[len(latencies) // 2] / 1000,
                "p99_ms": latencies[int(len(latencies) * 0.99)] / 1000,
                "load_client_cpu_s": round(time.process_time() - cpu0, 2),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
