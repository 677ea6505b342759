"""Does a crowd of stalled clients slow the healthy ones? (issue 3, behaviour 3)

Starts a feed (real data replayed at --speed) and an edge on loopback, pinned to CPU 0 when
taskset exists; measures HEALTHY reading clients' delivery latency (feed ingest -> client) for
SECONDS, first alone, then beside STALLED clients that never read. Prints both runs and the p99
ratio as JSON lines. Run: .venv/bin/python bench/slow_consumers.py [HEALTHY STALLED SECONDS]
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from harness import free_port, pinned

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def load(port: int, clients: int, seconds: float) -> dict[str, float]:
    args = [PY, str(ROOT / "bench" / "sse_load.py"), "127.0.0.1", str(port), "/sse/BTCUSDT"]
    out = subprocess.run(
        pinned("1", [*args, str(clients), str(seconds)]),
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout))


async def stall(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /sse/BTCUSDT HTTP/1.1\r\nHost: bench\r\n\r\n")
        sockets.append(sock)  # never read
    return sockets


def main() -> None:
    healthy, stalled, seconds = (int(a) for a in (sys.argv[1:] or ["50", "50", "10"]))
    feed_port, edge_port = free_port(), free_port()
    feed = subprocess.Popen(
        pinned("0", [PY, "-m", "feed_service", "--port", str(feed_port), "--no-metrics",
                     "--source", "replay", "--replay-path", "data/binance/spot", "--speed", "1",
                     "--loop"]),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    edge = subprocess.Popen(
        pinned("0", [PY, "-m", "edge_service", "--port", str(edge_port),
                     "--feed-target", f"127.0.0.1:{feed_port}"]),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(6)
        load(edge_port, 1, 2)  # open the upstream
        baseline = load(edge_port, healthy, seconds)
        sockets = asyncio.run(stall(edge_port, stalled))
        time.sleep(2)
        beside = load(edge_port, healthy, seconds)
        for sock in sockets:
            sock.close()
        print(json.dumps({"run": "healthy alone", **baseline}))
        print(json.dumps({"run": f"beside {stalled} stalled", **beside}))
        ratio = beside["p99_ms"] / max(baseline["p99_ms"], 0.001)
        print(json.dumps({"p99_ratio": round(ratio, 2), "target": "<= 2.0"}))
    finally:
        for process in (edge, feed):
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
