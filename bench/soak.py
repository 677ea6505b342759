"""``make soak``: the edge for 30 minutes at real rates with 1,000 clients and churn, sampled
each minute; fails if anything grows past its bound.

    .venv/bin/python bench/soak.py [--minutes 30] [--clients 1000]

The feed replays the bundled BTCUSDT and ETHUSDT recordings at their recorded pace, in a loop.
Each minute the C load client (bench/sseload.c) opens ``--clients`` streams (half on each
symbol), reads for 50 s and closes them all: 1,000 connects and disconnects a minute, beside a
churner that opens and drops 20 more short streams a second. At the end of each minute: the
edge's RSS, open file descriptors, asyncio tasks and open streams (once the minute's clients
are gone), and the minute's p99 delivery latency.

Bounds (from minute 5, once caches and the history are warm, to the end): RSS grows by at most
10 % (and 20 MiB), file descriptors and tasks return to their minute-5 counts within 10, no
stream is left open. Writes bench/results/<date>-soak.{json,png} and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from datetime import date
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import free_port, rss_kib, run_load, start, wait_http

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
DATA = ROOT / "data" / "binance" / "spot"
WINDOW_S = 50.0
WARM_MINUTE = 5
CHURN_PER_S = 20


def churn(base: str, stop: threading.Event, counts: dict[str, int]) -> None:
    """Open and drop short streams, about CHURN_PER_S a second, until ``stop``."""
    with httpx.Client(timeout=5) as http:
        while not stop.is_set():
            started = time.monotonic()
            try:
                with http.stream("GET", f"{base}/sse/ETHUSDT") as response:
                    status = str(response.status_code)
                    counts[status] = counts.get(status, 0) + 1
                    next(response.iter_raw(), None)
            except httpx.HTTPError:
                counts["error"] = counts.get("error", 0) + 1
            stop.wait(max(0.0, 1 / CHURN_PER_S - (time.monotonic() - started)))


def metric(base: str, name: str) -> float:
    for line in httpx.get(f"{base}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


def rss_parts_mib(pid: int) -> dict[str, float]:
    """The edge's resident memory split as /proc/PID/status splits it: anonymous (the heaps:
    Python's, glibc's, grpc core's) and file-backed (shared-library code faulted in), in MiB."""
    parts = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            parts[key.lower().replace("rss", "rss_") + "_mib"] = round(
                int(value.split()[0]) / 1024, 1
            )
    return parts


def sample(minute: int, pid: int, base: str, figures: dict[str, object]) -> dict[str, object]:
    time.sleep(2.0)  # the minute's clients have gone: what stays is what would leak
    return {
        "minute": minute,
        "rss_mib": round(rss_kib([pid]) / 1024, 1),
        **rss_parts_mib(pid),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "tasks": metric(base, "tickstream_edge_asyncio_tasks"),
        "open_streams": metric(base, "tickstream_edge_open_streams"),
        "p99_ms": figures["p99_ms"],
        "events_per_s": figures["events_per_s"],
        "closed_early": figures["closed_early"],
    }


def bounds(rows: list[dict[str, object]]) -> list[str]:
    """What grew past its bound, from the warm minute to the last."""
    warm = rows[min(WARM_MINUTE, len(rows)) - 1]
    last = rows[-1]
    broken = []
    rss0, rss1 = float(warm["rss_mib"]), float(last["rss_mib"])  # type: ignore[arg-type]
    if rss1 > rss0 * 1.10 and rss1 > rss0 + 20:
        broken.append(f"RSS {rss0} -> {rss1} MiB")
    for key in ("fds", "tasks"):
        if float(last[key]) > float(warm[key]) + 10:  # type: ignore[arg-type]
            broken.append(f"{key} {warm[key]} -> {last[key]}")
    if float(last["open_streams"]) > 0:  # type: ignore[arg-type]
        broken.append(f"{last['open_streams']} streams left open")
    return broken


def table(rows: list[dict[str, object]]) -> str:
    keys = [
        "minute",
        "rss_mib",
        "rss_anon_mib",
        "rss_file_mib",
        "fds",
        "tasks",
        "open_streams",
        "p99_ms",
        "events_per_s",
    ]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def plot(rows: list[dict[str, object]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [row["minute"] for row in rows]
    figure, axes = plt.subplots(4, 1, figsize=(8, 9), sharex=True)
    for axis, key, label in zip(
        axes,
        ("rss_mib", "fds", "tasks", "p99_ms"),
        ("edge RSS (MiB)", "open fds", "asyncio tasks", "p99 latency (ms)"),
        strict=True,
    ):
        axis.plot(minutes, [row[key] for row in rows], marker="o")
        axis.set_ylabel(label)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    if all("rss_anon_mib" in row for row in rows):
        axes[0].plot(minutes, [row["rss_anon_mib"] for row in rows], marker=".", label="anonymous")
        axes[0].plot(
            minutes, [row["rss_file_mib"] for row in rows], marker=".", label="file-backed"
        )
        axes[0].legend(loc="lower right")
    axes[-1].set_xlabel("minute")
    figure.suptitle("tickstream edge soak: 1,000 clients reconnecting each minute, real rates")
    figure.tight_layout()
    figure.savefig(out, dpi=90)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--clients", type=int, default=1000)
    args = parser.parse_args()
    logs = ROOT / "bench" / "results" / "logs"
    feed_port, edge_port = free_port(), free_port()
    replay = ["--source", "replay", "--replay-path", str(DATA), "--speed", "1", "--loop"]
    feed_args = ["feed_service", "--port", str(feed_port), "--no-metrics", *replay]
    edge_args = [
        "edge_service",
        "--port",
        str(edge_port),
        "--feed-target",
        f"127.0.0.1:{feed_port}",
    ]
    feed = start("soak-feed", [PY, "-m", *feed_args], logs, cpu=None)
    edge = start("soak-edge", [PY, "-m", *edge_args], logs, cpu=None)
    base = f"http://127.0.0.1:{edge_port}"
    stop, counts = threading.Event(), {}
    rows: list[dict[str, object]] = []
    try:
        wait_http(f"{base}/readyz", proc=edge)
        threading.Thread(target=churn, args=(base, stop, counts), daemon=True).start()
        for minute in range(1, args.minutes + 1):
            path = "/sse/BTCUSDT" if minute % 2 else "/sse/ETHUSDT"
            figures = run_load(edge_port, path, args.clients, WINDOW_S, cpu=None)
            rows.append(sample(minute, edge.pid, base, figures))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        stop.set()
        edge.stop()
        feed.stop()
    return report(rows, counts)


def report(rows: list[dict[str, object]], counts: dict[str, int]) -> int:
    results = ROOT / "bench" / "results"
    stem = results / f"{date.today()}-soak"
    stem.with_suffix(".json").write_text(json.dumps({"rows": rows, "churn": counts}, indent=1))
    plot(rows, stem.with_suffix(".png"))
    print(table(rows))
    print(f"churn streams by status: {counts}")
    broken = bounds(rows)
    print("bounds kept" if not broken else f"BOUNDS BROKEN: {'; '.join(broken)}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
