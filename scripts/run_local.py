"""``make run``: the feed replaying the bundled real data in a loop, and the edge, on loopback.

Ports come from FEED_PORT (default 50051), EDGE_PORT (default 8000) and FEED_METRICS_PORT
(default 9464); any other FEED_* / EDGE_* variable applies too. Ctrl-C (or SIGTERM) stops both.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "binance" / "spot"


def is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and 0 < int(text) < 65536


def taken(ports: dict[str, str]) -> list[str]:
    """The variables of ``ports`` whose port something on 127.0.0.1 already listens on (its
    answers would pass for ours: a foreign edge's /readyz, say)."""
    busy = []
    for name, port in ports.items():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is free
            try:
                sock.bind(("127.0.0.1", int(port)))
            except OSError:
                busy.append(f"{name}={port}")
    return busy


def main() -> int:
    feed_port = os.environ.get("FEED_PORT", "50051")
    metrics_port = os.environ.setdefault("FEED_METRICS_PORT", "9464")
    edge_port = os.environ.get("EDGE_PORT", "8000")
    ports = {"FEED_PORT": feed_port, "EDGE_PORT": edge_port, "FEED_METRICS_PORT": metrics_port}
    if bad := [f"{name}={port!r}" for name, port in ports.items() if not is_port(port)]:
        print(f"run_local: not a port (1 to 65535): {', '.join(bad)}", flush=True)
        return 2
    if busy := taken(ports):
        print(f"run_local: in use on 127.0.0.1: {', '.join(busy)}; choose other ports", flush=True)
        return 1
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("EDGE_FEED_TARGET", f"127.0.0.1:{feed_port}")
    feed_args = ["--source", "replay", "--replay-path", str(DATA), "--speed", "1", "--loop"]
    children = [
        subprocess.Popen([sys.executable, "-m", "feed_service", *feed_args], cwd=ROOT, env=env),
        subprocess.Popen([sys.executable, "-m", "edge_service"], cwd=ROOT, env=env),
    ]

    asked: list[int] = []  # the signal that asked us to stop, once one did

    def stop(signum: int, _frame: object) -> None:
        asked.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    base = f"http://127.0.0.1:{edge_port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and all(c.poll() is None for c in children):
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=1):
                break
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    if all(c.poll() is None for c in children):
        print(
            "\ntickstream is up, replaying real Binance BTCUSDT/ETHUSDT ticks (2024-08-08):\n"
            f"  live page     {base}/\n"
            f"  SSE stream    curl -N {base}/sse/BTCUSDT\n"
            f"  several       curl -N '{base}/sse?symbols=BTCUSDT,ETHUSDT&snapshot=true'\n"
            f"  symbols       {base}/symbols\n"
            f"  API document  {base}/openapi.json\n"
            f"  gRPC feed     127.0.0.1:{feed_port} (tickstream.v1.FeedService, reflection on)\n"
            f"  metrics       {base}/metrics (edge), "
            f"http://127.0.0.1:{metrics_port}/metrics (feed)\n"
            "Ctrl-C stops both.\n",
            flush=True,
        )
    while all(child.poll() is None for child in children):
        time.sleep(0.5)
    ended = [child for child in children if child.poll() is not None]
    if not asked:  # a service ended by itself: stop the other, and fail however it ended
        first = ended[0]
        name = "feed" if first is children[0] else "edge"
        print(f"run_local: the {name} ended unasked (status {first.returncode})", flush=True)
        stop(signal.SIGTERM, None)
        for child in children:
            child.wait()
        return first.returncode or 1
    codes = [child.wait() for child in children]  # both drain and exit 0 after SIGTERM
    return next((code for code in codes if code != 0), 0)


if __name__ == "__main__":
    sys.exit(main())
