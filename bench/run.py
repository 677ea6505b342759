"""``make bench``: tickstream side by side with Nchan and a bare Starlette baseline.

Scenarios (each writes ``bench/results/<date>-<scenario>.json``):

- ``fanout``: 1,000 clients, each server's highest offered rate with p99 <= 50 ms and nothing
  dropped (a ladder of steps per server, ``ladder.py``), then every server at 340 events/s per
  client (saturation: edge CPU per client write and per delivered event); 100 clients at two
  fixed rates; tickstream's edge with 2 workers (``--workers 2``) on the 1,000-client ladder;
- ``scaling``: delivered events/s and p99 vs clients (10 -> 10,000) at a fixed tick rate, with
  the feed's CPU per tick (it must not grow with SSE clients);
- ``memory``: RSS vs idle SSE connections (heartbeats flowing), per connection, the CPU each
  stream's set-up costs, and how many of 19,900 connect within 20 s;
- ``latency``: ingest -> client receive at real-data rates: the bundled Binance recording
  (BTCUSDT + ETHUSDT) replayed at 1x to every server (the feed's replay source; the same ticks
  and pacing from ``replay_ticks.py`` for Nchan and the baseline), 200 and 1,000 clients, each
  window over the same stretch of the recording; and tickstream with 2 edge workers;
- ``feed``: ticks/s the feed streams to one gRPC subscriber;
- ``profile``: py-spy of the edge at saturation (flame graph SVG + top functions);
- ``publish``: producers' ticks/s into the feed and end to end, a 20 s flood (``publish.py``,
  which also writes its own block of ``bench/README.md``).

Then ``<date>-summary.md`` (targets, measured values, ratios to Nchan and to the baseline),
PNG plots, and the results block of ``bench/README.md``. Servers run on CPU 0 and the load
client on CPU 1 (the 2-worker edge on CPUs 0 and 1, sharing CPU 1 with the load client).
Usage: python bench/run.py [--only SCENARIO ...] [--results DIR] [--no-readme]
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
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from backbone import run_backbone
from harness import (
    BENCH,
    CLIENT_CPU,
    PY,
    ROOT,
    SERVER_CPU,
    ServerStartError,
    cpu_seconds,
    free_port,
    pinned,
    rss_kib,
    run_load,
    start,
    tree_cpu_seconds,
)
from ladder import next_rate, passes
from servers import Baseline, Nchan, Server, Tickstream

Row = dict[str, Any]
RESULTS = BENCH / "results"
LOGS = BENCH / ".build" / "logs"
MEASURE_S = 3.5
SERVER_KINDS: dict[str, Callable[..., Server]] = {
    "tickstream": Tickstream,
    "nchan": Nchan,
    "baseline": Baseline,
}
TWO_WORKERS = "tickstream-2w"  # the edge with --workers 2, pinned to both CPUs
TWO_WORKER_CPUS = f"{SERVER_CPU},{CLIENT_CPU}"
FANOUT_CLIENTS = 1000
SATURATION_RATE = 340  # events/s per client: 340,000 offered to 1,000 clients
FANOUT_100_RATES = [1000, 5000]  # 100 clients (an earlier target: >= 400,000 events/s)
SCALING_CLIENTS = [10, 100, 1000, 10_000]
SCALING_RATE = 10
# 19,900, not 20,000: the per-process open-files hard limit here is 20,000 and cannot be raised
# (no CAP_SYS_RESOURCE), so no server process can hold 20,000 client sockets plus its own files.
# Seconds each step may take to connect: 19,900 must connect within 20 s (a target); the
# smaller steps measure RSS per connection, which needs them all connected, so they may take 40.
MEMORY_CONNECT_S = {1000: 40, 10_000: 40, 19_900: 20}
LATENCY_S = 15
# Seconds from a replay's first batch to the latency window's opening, by clients: the same
# for every server, so every window covers the same ticks (1,000 clients take longer to connect).
REPLAY_LEAD_S = {200: 12, 1000: 30}
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
        f"load client on CPU {CLIENT_CPU}; tickstream's 2-worker edge on CPUs "
        f"{TWO_WORKER_CPUS} (sharing CPU {CLIENT_CPU} with the load client)",
    }


def kinds() -> list[str]:
    missing = Nchan.available()
    if missing:
        say(f"Nchan left out: {missing}")
        return ["tickstream", "baseline"]
    return list(SERVER_KINDS)


def make_server(kind: str, rate: float, logs: Path, **options: Any) -> Server:
    """Start ``kind`` (``TWO_WORKERS``: tickstream with ``--workers 2`` on both CPUs)."""
    if kind == TWO_WORKERS:
        return Tickstream(rate, logs, workers=2, edge_cpu=TWO_WORKER_CPUS, **options)
    return SERVER_KINDS[kind](rate, logs, **options)


def unavailable(kind: str, error: ServerStartError, **fields: Any) -> Row:
    """The row of a run whose server did not start (the edge has no ``--workers`` yet)."""
    reason = "edge has no --workers" if "--workers" in str(error) else f"did not start: {error}"
    say(f"{kind}: n/a ({reason})")
    return {"server": kind, **fields, "unavailable": reason}


def reading(server: Server) -> dict[str, Any]:
    """The server's CPU (all its processes; its own serving processes apart), the feed's CPU,
    RSS and client-write counter, now."""
    counter = server.client_writes()
    return {
        "cpu": tree_cpu_seconds([p.pid for p in server.procs]),
        "own_cpu": tree_cpu_seconds(server.own_pids),
        "feed_cpu": cpu_seconds(server.feed_pid) if server.feed_pid is not None else None,
        "rss": rss_kib(server.memory_pids),
        "writes": counter,
    }


def window_figures(start: dict[str, Any], end: dict[str, Any], seconds: float, events: int) -> Row:
    """Server figures over a measurement window from the readings at its two ends: CPU shares,
    RSS, and the serving process's CPU per delivered event and per client write."""
    own = end["own_cpu"] - start["own_cpu"]
    figures: Row = {
        "server_cpu": round((end["cpu"] - start["cpu"]) / seconds, 2),
        "own_cpu": round(own / seconds, 2),
        "server_rss_mib": round(end["rss"] / 1024, 1),
        "own_us_per_event": round(own * 1e6 / events, 2) if events else None,
    }
    if start["feed_cpu"] is not None:
        figures["feed_cpu"] = round((end["feed_cpu"] - start["feed_cpu"]) / seconds, 3)
    if start["writes"] and end["writes"]:
        name, writes = end["writes"][0], end["writes"][1] - start["writes"][1]
        figures |= {"writes_counter": name, "client_writes": int(writes)}
        figures["own_us_per_write"] = round(own * 1e6 / writes, 2) if writes else None
    return figures


def measured(
    server: Server,
    clients: int,
    seconds: float = MEASURE_S,
    also: Callable[[str], None] | None = None,
    **load: Any,
) -> Row:
    """One load run against ``server`` (``load``: run_load's options), with the server's CPU
    and RSS over the same window; ``also(edge)`` runs at the window's start and end too."""
    readings: dict[str, dict[str, Any]] = {}

    def window(edge: str) -> None:
        if edge in ("start", "end"):
            if also is not None:
                also(edge)
            readings[edge] = reading(server)

    figures = run_load(
        server.port,
        server.path,
        clients,
        seconds,
        check_ids=server.check_ids,
        check_seq=server.check_seq,
        on_window=window,
        **load,
    )
    events = int(figures["events"])  # type: ignore[call-overload]
    return figures | window_figures(readings["start"], readings["end"], seconds, events)


def one_run(kind: str, clients: int, rate: float, connect_timeout: float = 25) -> Row:
    """Start ``kind`` at ``rate`` events/s per client, load it with ``clients``, stop it; the
    run's row (with ``offered_per_s``), or an ``unavailable`` row when it did not start."""
    fields: Row = {"server": kind, "clients": clients, "rate": rate}
    try:
        server = make_server(kind, rate, LOGS / kind)
    except ServerStartError as error:
        return unavailable(kind, error, **fields)
    try:
        figures = measured(server, clients, connect_timeout=connect_timeout)
    finally:
        server.stop()
    return fields | {"offered_per_s": rate * clients, **figures}


def fanout_line(row: Row) -> str:
    text = (
        f"fanout {row['server']:13} {row['clients']:5} clients x {row['rate']:6g}/s: "
        f"{row['events_per_s']:>8} ev/s p50 {row['p50_ms']} ms p99 {row['p99_ms']} ms "
        f"(load client cpu {row['load_client_cpu']})"
    )
    return text + (" pass" if passes(row) else " fail")


def cost_line(row: Row) -> str:
    """Server CPU per client write (tickstream's counter) and per delivered event."""
    text = f"own cpu {row['own_cpu']}: {row['own_us_per_event']} us per delivered event"
    counter = row.get("writes_counter")
    if counter is None:
        return text
    text += f", {row.get('own_us_per_write')} us per client write ({counter}"
    if counter != "tickstream_edge_client_writes_total":
        text += ": fallback, the edge has no tickstream_edge_client_writes_total yet"
    return text + ")"


def climb(kind: str) -> list[Row]:
    """The 1,000-client ladder of ``kind`` (``ladder.next_rate``), then its saturation step."""
    rows: list[Row] = []
    tried: dict[float, bool] = {}
    while (rate := next_rate(tried)) is not None:
        row = one_run(kind, FANOUT_CLIENTS, rate) | {"ladder": True}
        if "unavailable" in row:
            return [row]
        tried[rate] = passes(row)
        say(fanout_line(row))
        rows.append(row)
    top = [r for r in rows if r["rate"] == SATURATION_RATE]
    if not top:
        top = [one_run(kind, FANOUT_CLIENTS, SATURATION_RATE) | {"ladder": False}]
        if "unavailable" not in top[0]:
            say(fanout_line(top[0]))
            rows += top
    for row in top:
        row["saturation"] = True
        say(f"saturation {kind}: {cost_line(row)}")
    return rows


def run_fanout() -> list[Row]:
    runs = []
    for kind in [*kinds(), TWO_WORKERS]:
        runs += climb(kind)
    for kind in kinds():
        for rate in FANOUT_100_RATES:
            row = one_run(kind, 100, rate)
            say(fanout_line(row))
            runs.append(row)
    return runs


def run_scaling() -> list[Row]:
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


def idle_streams(server: Server, connections: int) -> Row:
    """Open ``connections`` idle streams (``MEMORY_CONNECT_S`` to connect, then 2 s held):
    RSS at the peak and per stream held, the serving process's CPU from launch to ready per
    stream connected, and the time that took."""
    marks: dict[str, tuple[float, float, int]] = {}

    def window(edge: str) -> None:
        now = time.monotonic()
        marks[edge] = (now, tree_cpu_seconds(server.own_pids), rss_kib(server.memory_pids))

    figures = run_load(
        server.port,
        server.path,
        connections,
        2.0,
        on_window=window,
        connect_timeout=MEMORY_CONNECT_S[connections],
    )
    connected = int(figures["connected_at_ready"])  # type: ignore[call-overload]
    (t0, cpu0, _), (t1, cpu1, _) = marks["launch"], marks["ready"]
    return {
        "connections": connections,
        "connected_in_window": connected,
        "held": figures["connected"],
        "closed_early": figures["closed_early"],
        "connect_window_s": MEMORY_CONNECT_S[connections],
        "connect_s": round(t1 - t0, 2),
        "setup_cpu_ms_per_connection": round(1000 * (cpu1 - cpu0) / max(connected, 1), 3),
        "rss_kib": max(rss for _, _, rss in marks.values()),
    }


def run_memory() -> list[Row]:
    runs = []
    for kind in kinds():
        options = {"ping": 5} if kind != "baseline" else {}
        server = SERVER_KINDS[kind](0.5 if kind == "tickstream" else 0, LOGS / kind, **options)
        try:
            time.sleep(1)
            idle = rss_kib(server.memory_pids)
            for connections in MEMORY_CONNECT_S:
                row = {"server": kind, "idle_rss_kib": idle, **idle_streams(server, connections)}
                held = max(row["held"], 1)  # per stream the server actually held
                row["kib_per_connection"] = round((row["rss_kib"] - idle) / held, 1)
                say(
                    f"memory {kind:10} {connections:6} connections: "
                    f"{row['connected_in_window']} connected in {row['connect_s']} s (window "
                    f"{row['connect_window_s']} s), {row['held']} held, "
                    f"{row['kib_per_connection']} KiB each, set-up "
                    f"{row['setup_cpu_ms_per_connection']} ms CPU each"
                )
                runs.append(row)
        finally:
            server.stop()
    return runs


def replay_run(kind: str, clients: int) -> Row:
    """``clients`` on both symbols of a server replaying the recording at 1x; the window opens
    ``REPLAY_LEAD_S`` after the replay's first batch, so every server's covers the same ticks."""
    lead = REPLAY_LEAD_S[clients]
    fields: Row = {"server": kind, "clients": clients, "source": "replay 1x"}
    try:
        server = make_server(kind, 0, LOGS / f"latency-{kind}", replay=True)
    except ServerStartError as error:
        return unavailable(kind, error, **fields)
    try:
        started_ns = server.replay_started_ns()
        start_at = started_ns + lead * 1_000_000_000
        figures = measured(server, clients, seconds=LATENCY_S, start_at_ns=start_at)
    finally:
        server.stop()
    position = (int(figures["window_start_unix_ns"]) - started_ns) / 1e9  # type: ignore[call-overload]
    row = fields | {**figures, "window_after_replay_start_s": round(position, 2)}
    row["replay_lead_s"] = lead
    say(
        f"latency {kind:13} replay 1x, {clients:4} clients: {row['events_per_s']} ev/s "
        f"({row['events_per_s'] / clients:.0f} per client), p50 {row['p50_ms']} ms, "
        f"p99 {row['p99_ms']} ms; window {position:.2f}-{position + LATENCY_S:.2f} s into the "
        f"replay; {cost_line(row)}"
    )
    return row


def run_latency() -> list[Row]:
    return [
        replay_run(kind, clients) for kind in [*kinds(), TWO_WORKERS] for clients in REPLAY_LEAD_S
    ]


def _feed_symbols(stub: Any, timeout: float = 60) -> list[str]:
    """The feed's symbols, once it answers (UNAVAILABLE while the replay loads)."""
    from tickstream.v1 import feed_pb2

    deadline = time.monotonic() + timeout
    while True:
        try:
            listed = stub.ListSymbols(feed_pb2.ListSymbolsRequest())
            return [s.symbol for s in listed.symbols]
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _wait_whole_history(stub: Any, request: Any) -> int:
    """Until the replay is all in the history (the head stops moving); the head offset."""
    head = -1
    while True:
        beat = next(iter(stub.Subscribe(request))).heartbeat
        if beat.head_offset == head:
            return head
        head = beat.head_offset
        time.sleep(1)


def _read_history(stub: Any, request: Any, head: int, reads: int = 10) -> tuple[int, int]:
    """Read the history from ``earliest`` to ``head`` ``reads`` times: (ticks, messages)."""
    ticks = messages = 0
    for _ in range(reads):
        call = stub.Subscribe(request)
        for response in call:
            if response.WhichOneof("event") == "ticks":
                ticks += len(response.ticks.ticks)
                messages += 1
                if response.ticks.head_offset >= head:
                    break
        call.cancel()
    return ticks, messages


def run_feed() -> list[Row]:
    """Ticks/s from the feed to one gRPC subscriber: the bundled replay loaded at full speed into
    the history, then read from ``earliest`` several times (the feed's send path alone)."""
    from tickstream.v1 import feed_pb2, feed_pb2_grpc

    data = sorted((ROOT / "data" / "binance" / "spot").glob("*.gz"))
    port = free_port()
    feed = start(
        "feed-max",
        [
            *(PY, "-m", "feed_service", "--port", str(port), "--no-metrics", "--source", "replay"),
            *("--speed", "0", *(arg for path in data for arg in ("--replay-path", str(path)))),
        ],
        LOGS / "feed",
    )
    affinity = os.sched_getaffinity(0)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = feed_pb2_grpc.FeedServiceStub(channel)
        request = feed_pb2.SubscribeRequest(symbols=_feed_symbols(stub), earliest=True)
        head = _wait_whole_history(stub, request)
        # The subscriber is this process: read on the client CPU, away from the feed.
        os.sched_setaffinity(0, {int(CLIENT_CPU)})
        cpu0, started = cpu_seconds(feed.pid), time.monotonic()
        ticks, messages = _read_history(stub, request, head)
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


def run_publish() -> list[Row]:
    from publish import run_publish as publish_scenarios

    return publish_scenarios()


SCENARIOS: dict[str, Callable[[], list[Row]]] = {
    "fanout": run_fanout,
    "scaling": run_scaling,
    "memory": run_memory,
    "latency": run_latency,
    "feed": run_feed,
    "profile": run_profile,
    "publish": run_publish,
    "backbone": lambda: run_backbone(LOGS / "backbone"),
}


def main() -> int:
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--results", type=Path, default=RESULTS, help="where results go")
    parser.add_argument(
        "--no-readme", action="store_true", help="leave bench/README.md's results block alone"
    )
    args = parser.parse_args()
    RESULTS = args.results.resolve()
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    info = machine()
    say(f"machine: {info['cpu']}, {info['cpus']} CPUs; {info['pinning']}")
    for name in args.only:
        say(f"scenario {name} ...")
        runs = SCENARIOS[name]()
        path = RESULTS / f"{TODAY}-{name}.json"
        path.write_text(json.dumps({"date": TODAY, "machine": info, "runs": runs}, indent=1))
        say(f"wrote {path}")
    if set(args.only) - {"publish", "backbone"}:  # those have README sections of their own
        from report import write_report

        summary = write_report(RESULTS, TODAY, info, readme=not args.no_readme)
        say(f"wrote {summary}")
        print(summary.read_text(), flush=True)
    say(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
