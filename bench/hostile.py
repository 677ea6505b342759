"""Hostile clients against the edge alone (issue 14): the healthy streams' latency with no
attack (the bare baseline of this run), then under 1,000 slowloris connections, a 100 MiB
request head each second, 100 MiB heads sent back to back (about a thousand a second, each cut
off after a MiB or two), and a connect flood at 500 attempts a second (the issue's 5,000 in
10 s). Each phase runs ``--rounds`` times, interleaved, and each attack's figure is its median
p99 against the no-attack phase's median: this VM's host takes CPU from it in bursts (the
steal time, printed per window), and one window's p99 moves with it.

    .venv/bin/python bench/hostile.py [--clients 100] [--seconds 10] [--rounds 3] [--no-pin]

The healthy streams are the C load client's (bench/sseload.c; 127.0.0.2-3), reading a
synthetic symbol at 200 ticks/s; the attacker is a separate process on 127.0.0.200, so the
edge's per-address limits (--connect-rate 50, --connect-burst 100, --max-streams-per-client 100)
apply to it alone. As in ``make bench``, the edge (and its feed) run on CPU 0 and the clients
on CPU 1; the attacker runs on CPU 1 at idle priority (SCHED_IDLE), standing for a remote
attacker, whose own CPU is not the edge's: what is measured is what the attack costs the edge.
``--no-pin`` shares both cores among everything, the attacker at normal priority. Prints a
table, writes bench/results/<date>-hostile-rounds.json. All loopback, bounded in time;
everything started here is stopped here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import CLIENT_CPU, SERVER_CPU, free_port, pinned, run_load, start, wait_http

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
ATTACKER = "127.0.0.200"
HUGE = 100 * 1024 * 1024
EDGE_LIMITS = ["--connect-rate", "50", "--connect-burst", "100", "--max-streams-per-client", "100"]


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACKER, 0))


async def slowloris(port: int, seconds: float, held: int = 1000) -> dict[str, int]:
    """Keep ``held`` unfinished request heads open, a header line every 2 s; reopen each one
    the edge closes."""
    stop = time.monotonic() + seconds
    counts: Counter[str] = Counter()

    async def one() -> None:
        while time.monotonic() < stop:
            try:
                reader, writer = await _connect(port)
            except OSError:
                counts["connect_failed"] += 1
                await asyncio.sleep(0.5)
                continue
            counts["opened"] += 1
            writer.write(b"GET /sse/AAA HTTP/1.1\r\nHost: edge\r\n")
            try:
                while time.monotonic() < stop:
                    writer.write(b"X-Slow: 1\r\n")
                    await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        if await asyncio.wait_for(reader.read(1024), 2.0) == b"":
                            counts["closed_by_edge"] += 1
                            break
            except OSError:
                counts["closed_by_edge"] += 1
            writer.close()

    await asyncio.gather(*(one() for _ in range(held)))
    return dict(counts)


def _huge_once(port: int) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), source_address=(ATTACKER, 0)) as sock:
        sock.sendall(b"GET /sse/AAA HTTP/1.1\r\nHost: edge\r\nX-Huge: ")
        sent, chunk = 0, b"a" * 65_536
        with contextlib.suppress(OSError):
            while sent < HUGE:
                sock.sendall(chunk)
                sent += len(chunk)
        sock.settimeout(5)
        try:
            return sent, sock.recv(64)
        except OSError:
            return sent, b""


async def huge_heads(port: int, seconds: float, every: float = 0.0) -> dict[str, int]:
    """Send 100 MiB request heads for ``seconds``: one after another, or one each ``every`` s."""
    stop = time.monotonic() + seconds
    counts: Counter[str] = Counter()
    while time.monotonic() < stop:
        started = time.monotonic()
        sent, reply = await asyncio.to_thread(_huge_once, port)
        await asyncio.sleep(max(0.0, every - (time.monotonic() - started)))
        counts["heads"] += 1
        counts["bytes_taken"] += sent
        counts["answered_431"] += reply.startswith(b"HTTP/1.1 431")
    counts["bytes_per_head"] = counts["bytes_taken"] // max(1, counts["heads"])
    return dict(counts)


async def connect_flood(port: int, seconds: float, per_second: int = 500) -> dict[str, int]:
    """SSE connects at ``per_second`` (the issue's 5,000 in 10 s) spread evenly over
    ``seconds``; each reads the status line and closes."""
    counts: Counter[str] = Counter()
    attempts = round(per_second * seconds)

    async def attempt() -> None:
        try:
            reader, writer = await _connect(port)
            writer.write(b"GET /sse/AAA HTTP/1.1\r\nHost: edge\r\n\r\n")
            line = await asyncio.wait_for(reader.readline(), 10)
            counts[line.split(b" ")[1].decode() if line.count(b" ") >= 2 else "closed"] += 1
            writer.close()
        except (OSError, TimeoutError):
            counts["failed"] += 1

    started = time.monotonic()
    tasks = []
    for index in range(attempts):
        await asyncio.sleep(max(0.0, started + index * seconds / attempts - time.monotonic()))
        tasks.append(asyncio.create_task(attempt()))
    await asyncio.gather(*tasks)
    counts["attempts"] = attempts
    counts["seconds"] = round(time.monotonic() - started)
    return dict(counts)


async def huge_each_second(port: int, seconds: float) -> dict[str, int]:
    """A 100 MiB request head each second (the issue's "a 100 MiB header", repeated so that
    every part of the window has one)."""
    return await huge_heads(port, seconds, every=1.0)


ATTACKS = {
    "slowloris": slowloris,
    "huge-1/s": huge_each_second,
    "huge": huge_heads,
    "flood": connect_flood,
}
PHASES = ("slowloris", "huge-1/s", "huge", "flood")


def attack_main(kind: str, port: int, seconds: float) -> None:
    print(json.dumps(asyncio.run(ATTACKS[kind](port, seconds))), flush=True)


def _cpu_times() -> list[int]:
    """The machine's CPU times (/proc/stat's first line: user ... steal), in clock ticks."""
    with open("/proc/stat", encoding="ascii") as stat:
        return [int(field) for field in stat.readline().split()[1:9]]


def _steal_pct(before: list[int], after: list[int]) -> float:
    """The share of CPU time the hypervisor took from this VM between two readings, in %."""
    spent = [b - a for a, b in zip(before, after, strict=True)]
    return round(100 * spent[7] / max(1, sum(spent)), 1)


def phase(port: int, kind: str | None, args: argparse.Namespace) -> dict[str, object]:
    """The healthy clients' figures over ``args.seconds`` while ``kind`` attacks (None: none)."""
    attacker = None
    if kind is not None:
        command = [PY, __file__, "--attack", kind, "--port", str(port)]
        command += ["--seconds", str(args.seconds + 6)]
        if args.client_cpu is not None and shutil.which("chrt"):
            command = ["chrt", "--idle", "0", *command]  # a remote attacker's CPU is not ours
        attacker = subprocess.Popen(
            pinned(args.client_cpu, command), stdout=subprocess.PIPE, text=True
        )
        time.sleep(3.0)  # the attack is under way before the window opens
    try:
        before = _cpu_times()
        figures = run_load(
            port, "/sse/AAA", args.clients, args.seconds, cpu=args.client_cpu, check_ids=True
        )
        figures["steal_pct"] = _steal_pct(before, _cpu_times())
    finally:
        stats = {}
        if attacker is not None:
            output, _ = attacker.communicate(timeout=args.seconds + 120)
            stats = json.loads(output.strip().splitlines()[-1]) if output.strip() else {}
    return {"attack": kind or "none", "healthy": figures, "attacker": stats}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--attack", choices=sorted(ATTACKS))
    parser.add_argument("--phases", default=",".join(PHASES), help="attacks to run, in order")
    parser.add_argument("--rounds", type=int, default=3, help="times each phase runs")
    parser.add_argument("--port", type=int)
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="share both cores (default: the edge alone on CPU 0, everything else on CPU 1)",
    )
    args = parser.parse_args()
    if args.attack:
        attack_main(args.attack, args.port, args.seconds)
        return 0
    logs = ROOT / "bench" / "results" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    feed_port, edge_port = free_port(), free_port()
    feed_args = ["feed_service", "--port", str(feed_port), "--no-metrics", "--symbols", "AAA"]
    feed_args += ["--rate", "200", "--bar-intervals", ""]
    edge_args = ["edge_service", "--port", str(edge_port), *EDGE_LIMITS]
    edge_args += ["--feed-target", f"127.0.0.1:{feed_port}"]
    server_cpu, args.client_cpu = (None, None) if args.no_pin else (SERVER_CPU, CLIENT_CPU)
    feed = start("feed", [PY, "-m", *feed_args], logs, cpu=server_cpu)
    edge = start("edge", [PY, "-m", *edge_args], logs, cpu=server_cpu)
    try:
        wait_http(f"http://127.0.0.1:{edge_port}/readyz", proc=edge)
        kinds = [None, *args.phases.split(",")] * args.rounds
        results = [phase(edge_port, kind, args) for kind in kinds]
    finally:
        edge.stop()
        feed.stop()
    report(results)
    out = ROOT / "bench" / "results" / f"{date.today()}-hostile-rounds.json"
    out.write_text(json.dumps(results, indent=1) + "\n", "utf-8")
    print(f"written {out.relative_to(ROOT)}")
    return 0


def report(results: list[dict[str, object]]) -> None:
    """Each window's figures, then each attack's median p99 against the no-attack median."""
    print(f"\n{'attack':<12}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'steal %':>9}  attacker")
    p99s: dict[str, list[float]] = {}
    for result in results:
        healthy = result["healthy"]
        assert isinstance(healthy, dict)
        p99s.setdefault(str(result["attack"]), []).append(float(healthy["p99_ms"]))
        print(
            f"{result['attack']:<12}{healthy['events_per_s']:>10}{healthy['p50_ms']:>9.1f}"
            f"{healthy['p99_ms']:>9.1f}{healthy['steal_pct']:>9}  {json.dumps(result['attacker'])}"
        )
        keys = ("id_gaps", "id_repeats", "closed_early", "errors", "clients_with_no_events")
        print(f"{'':<12}healthy streams: " + ", ".join(f"{k} {healthy.get(k)}" for k in keys))
    base = statistics.median(p99s["none"])
    print(f"\n{'attack':<12}{'median p99 ms':>15}{'x no attack':>13}  windows' p99 ms")
    for kind, values in p99s.items():
        median = statistics.median(values)
        listed = ", ".join(f"{v:.1f}" for v in values)
        print(f"{kind:<12}{median:>15.1f}{median / max(base, 0.001):>13.2f}  {listed}")


if __name__ == "__main__":
    sys.exit(main())
