"""``make bench``: tickstream side by side with Nchan and a bare Starlette baseline.

Scenarios (each writes ``bench/results/<date>-<scenario>.json``):

- ``fanout``: delivered events/s and latency at rising offered rates, 1,000 and 100 clients;
- ``scaling``: delivered events/s and p99 vs clients (10 -> 10,000) at a fixed tick rate, with
  the feed's CPU per tick (it must not grow with SSE clients);
- ``memory``: RSS vs idle SSE connections (heartbeats flowing), per connection;
- ``latency``: feed ingest -> client receive at real-data rates (Binance replay 1x, 200 clients
  on both symbols);
- ``feed``: ticks/s the feed streams to one gRPC subscriber;
- ``profile``: py-spy of the edge at saturation (flame graph SVG + top functions);
- ``publish``: producers' ticks/s into the feed and end to end, a 20 s flood (``publish.py``,
  which also writes its own block of ``bench/README.md``).

Then ``<date>-summary.md`` (targets, measured values, ratios to Nchan and to the baseline),
PNG plots, and the results block of ``bench/README.md``. Servers run on CPU 0 and the load
client on CPU 1. Usage: python bench/run.py [--only SCENARIO ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import date
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    BENCH,
    CLIENT_CPU,
    PY,
    ROOT,
    SERVER_CPU,
    cpu_seconds,
    free_port,
    pinned,
    rss_kib,
    run_load,
    start,
)
from servers import Baseline, Nchan, Server, Tickstream

RESULTS = BENCH / "results"
LOGS = BENCH / ".build" / "logs"
MEASURE_S = 3.5
SERVER_KINDS: dict[str, Callable[..., Server]] = {
    "tickstream": Tickstream,
    "nchan": Nchan,
    "baseline": Baseline,
}
FANOUT_LADDERS = {1000: [100, 340], 100: [1000, 5000]}  # ticks/s per ladder step
SCALING_CLIENTS = [10, 100, 1000, 10_000]
SCALING_RATE = 10
# 19,900, not 20,000: the per-process open-files hard limit here is 20,000 and cannot be raised
# (no CAP_SYS_RESOURCE), so no server process can hold 20,000 client sockets plus its own files.
MEMORY_CONNECTIONS = [1000, 10_000, 19_900]
TODAY = date.today().isoformat()


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


def machine() -> dict[str, object]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": model,
        "cpus": len(Path("/proc/cpuinfo").read_text().split("processor\t:")) - 1,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pinning": f"servers (feed + edge, nginx + publisher, baseline) on CPU {SERVER_CPU}; "
        f"load client on CPU {CLIENT_CPU}",
    }


def kinds() -> list[str]:
    missing = Nchan.available()
    if missing:
        say(f"Nchan left out: {missing}")
        return ["tickstream", "baseline"]
    return list(SERVER_KINDS)


def measured(
    server: Server,
    clients: int,
    seconds: float = MEASURE_S,
    also: Callable[[str], None] | None = None,
    connect_timeout: float = 20,
) -> dict[str, object]:
    """One load run against ``server``, with the server's CPU and RSS over the same window;
    ``also(edge)`` runs at the window's start and end too."""
    cpu: dict[str, float] = {}
    # nginx's worker is a child of its master
    pids = sorted({p.pid for p in server.procs} | set(server.memory_pids))

    def window(edge: str) -> None:
        if also is not None:
            also(edge)
        cpu[edge] = sum(cpu_seconds(pid) for pid in pids)
        if server.feed_pid is not None:
            cpu[f"feed-{edge}"] = cpu_seconds(server.feed_pid)
        cpu[f"rss-{edge}"] = rss_kib(server.memory_pids)

    figures = run_load(
        server.port,
        server.path,
        clients,
        seconds,
        check_ids=server.check_ids,
        on_window=window,
        connect_timeout=connect_timeout,
    )
    figures["server_cpu"] = round((cpu["end"] - cpu["start"]) / seconds, 2)
    figures["server_rss_mib"] = round(cpu["rss-end"] / 1024, 1)
    if "feed-start" in cpu:
        figures["feed_cpu"] = round((cpu["feed-end"] - cpu["feed-start"]) / seconds, 3)
    return figures


def one_run(kind: str, clients: int, rate: float, connect_timeout: float = 25) -> dict[str, object]:
    """Start ``kind`` at ``rate`` events/s per client, load it with ``clients``, stop it; the
    run's row (with ``offered_per_s``)."""
    server = SERVER_KINDS[kind](rate, LOGS / kind)
    try:
        figures = measured(server, clients, connect_timeout=connect_timeout)
    finally:
        server.stop()
    row: dict[str, object] = {"server": kind, "clients": clients, "rate": rate}
    return row | {"offered_per_s": rate * clients, **figures}


def run_fanout() -> list[dict[str, object]]:
    runs = []
    for kind in kinds():
        for clients, rates in FANOUT_LADDERS.items():
            for rate in rates:
                row = one_run(kind, clients, rate)
                say(
                    f"fanout {kind:10} {clients:5} clients x {rate:5}/s: "
                    f"{row['events_per_s']:>8} ev/s p50 {row['p50_ms']} ms "
                    f"p99 {row['p99_ms']} ms (load client cpu {row['load_client_cpu']})"
                )
                runs.append(row)
    return runs


def run_scaling() -> list[dict[str, object]]:
    runs = []
    for kind in kinds():
        for clients in SCALING_CLIENTS:
            row = one_run(kind, clients, SCALING_RATE, connect_timeout=30)
            say(
                f"scaling {kind:10} {clients:6} clients: {row['events_per_s']:>8} ev/s "
                f"p99 {row['p99_ms']} ms, server rss {row['server_rss_mib']} MiB"
            )
            runs.append(row)
    return runs


def run_memory() -> list[dict[str, object]]:
    runs = []
    for kind in kinds():
        options = {"ping": 5} if kind != "baseline" else {}
        server = SERVER_KINDS[kind](0.5 if kind == "tickstream" else 0, LOGS / kind, **options)
        try:
            time.sleep(1)
            pids = server.memory_pids
            idle = rss_kib(pids)
            for connections in MEMORY_CONNECTIONS:
                rss: list[int] = []

                def window(edge: str, rss: list[int] = rss, pids: list[int] = pids) -> None:
                    rss.append(rss_kib(pids))

                figures = run_load(
                    server.port, server.path, connections, 2.0, on_window=window, connect_timeout=40
                )
                row = {
                    "server": kind,
                    "connections": connections,
                    "held": figures["connected"],
                    "closed_early": figures["closed_early"],
                    "idle_rss_kib": idle,
                    "rss_kib": max(rss),
                    "kib_per_connection": round((max(rss) - idle) / connections, 1),
                }
                say(
                    f"memory {kind:10} {connections:6} connections: held {row['held']}, "
                    f"{row['kib_per_connection']} KiB each"
                )
                runs.append(row)
        finally:
            server.stop()
    return runs


def run_latency() -> list[dict[str, object]]:
    data = sorted((ROOT / "data" / "binance" / "spot").glob("*.gz"))
    replay = ("--source", "replay", "--loop", *(a for f in data for a in ("--replay-path", str(f))))
    server = Tickstream(0, LOGS / "latency", source=replay, path="/sse?symbols=BTCUSDT,ETHUSDT")
    try:
        figures = measured(server, 200, seconds=15)
    finally:
        server.stop()
    say(
        f"latency replay 1x, 200 clients: {figures['events_per_s']} ev/s, "
        f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms"
    )
    return [{"server": "tickstream", "clients": 200, "source": "replay 1x", **figures}]


def run_feed() -> list[dict[str, object]]:
    """Ticks/s from the feed to one gRPC subscriber: the bundled replay loaded at full speed into
    the history, then read from ``earliest`` several times (the feed's send path alone)."""
    from tickstream.v1 import feed_pb2, feed_pb2_grpc

    data = sorted((ROOT / "data" / "binance" / "spot").glob("*.gz"))
    port = free_port()
    feed = start(
        "feed-max",
        [
            *(PY, "-m", "feed_service", "--port", str(port), "--source", "replay"),
            *("--speed", "0", *(arg for path in data for arg in ("--replay-path", str(path)))),
        ],
        LOGS / "feed",
    )
    affinity = os.sched_getaffinity(0)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = feed_pb2_grpc.FeedServiceStub(channel)
        deadline = time.monotonic() + 60
        while True:  # UNAVAILABLE while the replay loads
            try:
                listed = stub.ListSymbols(feed_pb2.ListSymbolsRequest())
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        symbols = [s.symbol for s in listed.symbols]
        request = feed_pb2.SubscribeRequest(symbols=symbols, earliest=True)
        head = -1
        while True:  # until the replay is all in the history (the head stops moving)
            beat = next(iter(stub.Subscribe(request))).heartbeat
            if beat.head_offset == head:
                break
            head = beat.head_offset
            time.sleep(1)
        # The subscriber is this process: read on the client CPU, away from the feed.
        os.sched_setaffinity(0, {int(CLIENT_CPU)})
        ticks = messages = 0
        cpu0 = cpu_seconds(feed.pid)
        started = time.monotonic()
        for _ in range(10):
            call = stub.Subscribe(request)
            for response in call:
                if response.WhichOneof("event") == "ticks":
                    ticks += len(response.ticks.ticks)
                    messages += 1
                    if response.ticks.head_offset >= head:
                        break
            call.cancel()
        elapsed = time.monotonic() - started
        feed_cpu = cpu_seconds(feed.pid) - cpu0
        channel.close()
    finally:
        os.sched_setaffinity(0, affinity)
        feed.stop()
    row = {
        "subscribers": 1,
        "ticks": ticks,
        "ticks_per_s": round(ticks / elapsed),
        "ticks_per_message": round(ticks / max(messages, 1), 1),
        "feed_cpu": round(feed_cpu / elapsed, 2),
        "note": f"10 reads from earliest of the {head:,} replayed ticks held in the history",
    }
    say(f"feed: {row['ticks_per_s']} ticks/s to one subscriber ({row['ticks_per_message']}/msg)")
    return [row]


def run_profile() -> list[dict[str, object]]:
    """py-spy on the edge over the measurement window of a 1,000-client run at the fan-out
    target: a flame graph (SVG), the collapsed stacks (TXT), and the main thread's busiest
    functions, self and inclusive."""
    rate, clients, seconds = 340, 1000, 6
    server = Tickstream(rate, LOGS / "profile")
    out = RESULTS / f"{TODAY}-edge-profile"
    spies: list[subprocess.Popen[bytes]] = []

    def record(edge: str) -> None:
        if edge != "start":
            return
        command = [str(Path(PY).parent / "py-spy"), "record", "-p", str(server.memory_pids[0])]
        command += ["-d", str(seconds), "-r", "100"]
        for fmt, ext in (("raw", "txt"), ("flamegraph", "svg")):
            spies.append(
                subprocess.Popen(
                    pinned(CLIENT_CPU, [*command, "-f", fmt, "-o", f"{out}.{ext}"]),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.STDOUT,
                )
            )

    try:
        figures = measured(server, clients, seconds=seconds, also=record)
        for spy in spies:
            spy.wait(30)
    finally:
        server.stop()
    own, inclusive = main_thread_profile(Path(f"{out}.txt"))
    say(f"profile: edge at {figures['events_per_s']} ev/s; main thread self time: {own[:3]}")
    return [
        {
            "server": "tickstream",
            "clients": clients,
            "rate": rate,
            **figures,
            "main_thread_self_pct": own,
            "main_thread_inclusive_pct": inclusive,
        }
    ]


def main_thread_profile(
    raw: Path, limit: int = 20
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """From py-spy's collapsed stacks, the event-loop thread's ``limit`` busiest functions by
    self time and by inclusive time, as percentages of its samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if "Runner.run" not in stack:  # the event-loop thread; reader threads are apart
            continue
        frames = [f.split(" (")[0] for f in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for name in set(frames):
            inclusive[name] += int(count)

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(limit)]

    return share(own), share(inclusive)


def run_publish() -> list[dict[str, object]]:
    from publish import run_publish as publish_scenarios

    return publish_scenarios()


SCENARIOS: dict[str, Callable[[], list[dict[str, object]]]] = {
    "fanout": run_fanout,
    "scaling": run_scaling,
    "memory": run_memory,
    "latency": run_latency,
    "feed": run_feed,
    "profile": run_profile,
    "publish": run_publish,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=list(SCENARIOS), default=list(SCENARIOS))
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    started = time.monotonic()
    info = machine()
    say(f"machine: {info['cpu']}, {info['cpus']} CPUs; {info['pinning']}")
    for name in args.only:
        say(f"scenario {name} ...")
        runs = SCENARIOS[name]()
        path = RESULTS / f"{TODAY}-{name}.json"
        path.write_text(json.dumps({"date": TODAY, "machine": info, "runs": runs}, indent=1))
        say(f"wrote {path.relative_to(ROOT)}")
    if set(args.only) - {"publish"}:  # publish.py writes its own README block
        from report import write_report

        write_report(RESULTS, TODAY, info)
    say(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
