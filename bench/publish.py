"""Publish benchmark (issue 10, acceptance line 8): producers -> feed (-> edge -> SSE).

Ticks/s producers get acknowledged by the feed, ticks/s end to end to one SSE client, and a
20 s flood with the feed's RSS sampled.

Scenarios, each a row of ``bench/results/<date>-publish.json`` (about 2.5 minutes in all):

- ``feed``: 1 producer (dedup ids on every tick, and none), then 4 producers, each a process
  publishing batches of 100 as fast as acknowledgements come (``producer.py``, at most 16
  batches unacknowledged), into a feed with ``--source none``; ticks/s acknowledged;
- ``bare``: the same producer against ``ack_server.py``, a grpc.aio Publish server that only
  acknowledges (raw: not even decoding; parse: decoding each request): the gRPC ceiling here;
  Nchan has no equivalent of Publish, so there is no Nchan column;
- ``e2e``: 1 producer -> feed -> edge -> one SSE client (``sseload.c``, ``/sse?symbols=`` of the
  producer's four symbols, ids checked for gaps), pinned and not pinned, and once more pinned
  under py-spy (feed and edge, 100 Hz, non-blocking) for the profile;
- ``flood``: one producer with 256 batches in flight for 20 s; the feed's RSS every second.

Pinning as in ``run.py``: servers (feed and edge together, or the ack server) on CPU 0, the
producers and the SSE client on CPU 1. Every process started here is stopped by its PID.
Usage: python bench/publish.py [--only feed bare e2e flood] [--no-readme]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    BENCH,
    CLIENT_CPU,
    PY,
    ROOT,
    SERVER_CPU,
    Proc,
    cpu_seconds,
    free_port,
    pinned,
    rss_kib,
    run_load,
    start,
    wait_http,
)

RESULTS = BENCH / "results"
LOGS = BENCH / ".build" / "logs" / "publish"
TODAY = date.today().isoformat()
TARGET = 200_000  # ticks/s, one producer, batches of 100, end to end to one SSE client
BATCH = 100
WINDOW = 16
FLOOD_WINDOW = 256
THROUGHPUT_S = 10
BARE_S = 6
E2E_WARMUP_S, E2E_S = 2.0, 6.0
E2E_PACED = (10_000, 20_000, 50_000, 100_000, 200_000)  # ticks/s; stops at the first lossy
FLOOD_S = 20
HISTORY = 500_000
FLOOD_DEDUP_WINDOW = 500_000
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT")  # those producer.py publishes
START_DELAY_S = 1.5  # producers start together this long after launch (imports, templates)
Row = dict[str, Any]


def say(text: str) -> None:
    print(f"[publish {time.strftime('%H:%M:%S')}] {text}", flush=True)


def start_feed(logs: Path, cpu: str | None, *extra: str) -> tuple[Proc, int]:
    """A feed fed by producers only; the Proc and its gRPC port (once it answers health)."""
    port = free_port()
    args = [PY, "-m", "feed_service", "--port", str(port), "--source", "none", "--no-metrics"]
    args += ["--history-size", str(HISTORY), *extra]
    feed = start("feed", args, logs, cpu=cpu)
    _wait_grpc(port)
    return feed, port


def _wait_grpc(port: int, timeout: float = 30) -> None:
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout)


class Sampler:
    """Reads RSS (KiB) and CPU seconds of ``pids`` every ``every`` s in a thread, until stopped:
    rows of (seconds since ``t0``, rss_kib, cpu_s)."""

    def __init__(self, pids: list[int], t0: float, every: float = 1.0) -> None:
        self.pids, self.t0, self.every = pids, t0, every
        self.rows: list[tuple[float, int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                cpu = sum(cpu_seconds(pid) for pid in self.pids)
            except (FileNotFoundError, ProcessLookupError):
                return
            self.rows.append((round(time.time() - self.t0, 2), rss_kib(self.pids), cpu))
            self._stop.wait(self.every)

    def stop(self) -> list[tuple[float, int, float]]:
        self._stop.set()
        self._thread.join()
        return self.rows

    def rss_mib(self, at: float) -> float:
        """RSS in MiB of the last sample at or before ``at`` (s after t0)."""
        before = [r for r in self.rows if r[0] <= at] or self.rows[:1]
        return round(before[-1][1] / 1024, 1) if before else 0.0

    def cpu_share(self, since: float, until: float) -> float:
        """CPU seconds per second of the pids between ``since`` and ``until`` (s after t0)."""
        inside = [r for r in self.rows if since <= r[0] <= until]
        if len(inside) < 2:
            return 0.0
        return round((inside[-1][2] - inside[0][2]) / (inside[-1][0] - inside[0][0]), 2)


@contextmanager
def producers(
    target: str,
    seconds: float,
    count: int = 1,
    *,
    dedup: bool = True,
    window: int = WINDOW,
    rate: float = 0,
    cpu: str | None = CLIENT_CPU,
) -> Iterator[tuple[float, list[Row]]]:
    """Start ``count`` producer processes publishing to ``target`` for ``seconds`` (as fast as
    acknowledged, or paced at ``rate`` ticks/s each), together at the yielded wall-clock time;
    after the block, the list holds each one's figures."""
    start_at = time.time() + START_DELAY_S
    popens = []
    for index in range(count):
        args = [PY, str(BENCH / "producer.py"), target, str(seconds), "--window", str(window)]
        args += ["--producer", str(index), "--start-at", str(start_at), "--batch", str(BATCH)]
        args += ["--dedup"] if dedup else []
        args += ["--rate", str(rate)] if rate else []
        LOGS.mkdir(parents=True, exist_ok=True)
        with (LOGS / f"producer-{index}.log").open("a") as log:
            popens.append(
                subprocess.Popen(
                    pinned(cpu, args), stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT
                )
            )
    figures: list[Row] = []
    try:
        yield start_at, figures
        for popen in popens:
            out, _ = popen.communicate(timeout=seconds + 60)
            figures.append(json.loads(out.strip().splitlines()[-1]) if out.strip() else {})
    finally:
        for popen in popens:
            if popen.poll() is None:
                popen.kill()
                popen.wait()


def acked_rate(figures: list[Row], seconds: float) -> int:
    """Ticks/s acknowledged over seconds 1..``seconds`` of the run (the first is warm-up),
    all producers together."""
    last = int(seconds)
    total = sum(sum(f.get("acked_per_s", [])[1:last]) for f in figures)
    return round(total / (last - 1))


def producer_summary(figures: list[Row]) -> Row:
    """What the producers saw: statuses, acked ticks, waits, ack latency (worst producer)."""
    keys = ("batches_acked", "accepted", "duplicates", "window_wait_s", "write_wait_s", "cpu_s")
    out: Row = {k: round(sum(float(f.get(k, 0)) for f in figures), 2) for k in keys}
    out["statuses"] = sorted({str(f.get("status", "no output")) for f in figures})
    out["details"] = sorted({str(f["details"]) for f in figures if f.get("details")})
    out["ack_ms_p50"] = max(float(f.get("ack_ms_p50", 0)) for f in figures)
    out["ack_ms_p99"] = max(float(f.get("ack_ms_p99", 0)) for f in figures)
    out["acked_per_s_series"] = [
        sum(vals) for vals in zip(*(f.get("acked_per_s", []) for f in figures), strict=False)
    ]
    return out


def acked_between(figures: list[Row], first: float, last: float) -> int:
    """Ticks/s acknowledged, all producers together, in the whole seconds of the run from
    ``first`` (rounded up) to ``last`` (rounded down); second 0 is left out as warm-up."""
    lo, hi = max(1, int(first + 0.999)), int(last)
    total = sum(sum(f.get("acked_per_s", [])[lo:hi]) for f in figures)
    return round(total / max(hi - lo, 1))


def run_feed() -> list[Row]:
    """Ticks/s acknowledged by the feed alone: 1 producer with and without dedup ids, then 4."""
    rows = []
    for count, dedup in ((1, True), (1, False), (4, True)):
        feed, port = start_feed(LOGS / "feed", SERVER_CPU)
        try:
            with producers(f"127.0.0.1:{port}", THROUGHPUT_S, count, dedup=dedup) as (t0, figs):
                sampler = Sampler([feed.pid], t0)
            sampler.stop()
        finally:
            feed.stop()
        row: Row = {
            "scenario": "feed",
            "producers": count,
            "dedup_ids": dedup,
            "seconds": THROUGHPUT_S,
            "ticks_per_s": acked_rate(figs, THROUGHPUT_S),
            "steady_ticks_per_s": acked_between(figs, THROUGHPUT_S / 2, THROUGHPUT_S),
            "server_cpu": sampler.cpu_share(1, THROUGHPUT_S),
            "server_rss_mib": round(sampler.rows[-1][1] / 1024, 1),
            **producer_summary(figs),
        }
        say(
            f"feed, {count} producer(s), dedup ids {'on' if dedup else 'off'}: "
            f"{row['ticks_per_s']:,} ticks/s acked (feed CPU {row['server_cpu']}), "
            f"status {row['statuses']}"
        )
        rows.append(row)
    return rows


def run_bare() -> list[Row]:
    """The same producers against ``ack_server.py``: raw (no decoding) with 1 and 4 producers,
    and decoding each request with 1."""
    rows = []
    for count, parse in ((1, False), (4, False), (1, True)):
        port = free_port()
        args = [PY, str(BENCH / "ack_server.py"), str(port), *(["--parse"] if parse else [])]
        server = start("ack-server", args, LOGS / "bare", cpu=SERVER_CPU)
        try:
            _wait_grpc(port)
            with producers(f"127.0.0.1:{port}", BARE_S, count, dedup=True) as (t0, figs):
                sampler = Sampler([server.pid], t0)
            sampler.stop()
        finally:
            server.stop()
        row: Row = {
            "scenario": "bare",
            "producers": count,
            "server_decodes": parse,
            "dedup_ids": True,
            "seconds": BARE_S,
            "ticks_per_s": acked_rate(figs, BARE_S),
            "server_cpu": sampler.cpu_share(1, BARE_S),
            **producer_summary(figs),
        }
        say(
            f"bare ack server ({'decoding' if parse else 'raw'}), {count} producer(s): "
            f"{row['ticks_per_s']:,} ticks/s acked (server CPU {row['server_cpu']}, "
            f"producer CPU {row['cpu_s']} s over {BARE_S} s)"
        )
        rows.append(row)
    return rows


def declare_symbols(port: int) -> None:
    """Publish one batch so the feed knows the producer's symbols before the SSE client asks."""
    import grpc
    from producer import METHOD, request_bytes, templates
    from tickstream.v1 import ingest_pb2

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        publish = channel.stream_stream(
            METHOD,
            request_serializer=None,
            response_deserializer=ingest_pb2.PublishResponse.FromString,
        )
        acks = list(publish(iter([request_bytes(templates(BATCH, False, 99), 1, False)])))
    if len(acks) != 1 or acks[0].accepted != BATCH:
        raise RuntimeError(f"the declaring batch was not stored: {acks}")


def start_edge(feed_port: int, logs: Path, cpu: str | None) -> tuple[Proc, int]:
    port = free_port()
    args = [PY, "-m", "edge_service", "--port", str(port)]
    args += ["--feed-target", f"127.0.0.1:{feed_port}"]
    edge = start("edge", args, logs, cpu=cpu)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz")
    except RuntimeError:
        edge.stop()
        raise
    return edge, port


def spy(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy on ``pid`` for ``seconds`` at 100 Hz, not pausing it; collapsed stacks to ``out``
    (one line per stack, thread ids included)."""
    command = [str(Path(PY).parent / "py-spy"), "record", "-p", str(pid), "-d", str(int(seconds))]
    command += ["-r", "100", "--nonblocking", "--threads", "-f", "raw", "-o", str(out)]
    return subprocess.Popen(
        pinned(CLIENT_CPU, command), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )


def wait_symbols(port: int, timeout: float = 15) -> None:
    """Until the edge's ``/symbols`` lists the producer's symbols (it refreshes its list from
    the feed now and then; an SSE request before that is answered 404 unknown-symbol)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = httpx.get(f"http://127.0.0.1:{port}/symbols", timeout=5)
        if answer.status_code == 200:
            known = {s["symbol"] for s in answer.json()["symbols"]}
            if known >= set(SYMBOLS):
                return
        time.sleep(0.2)
    raise RuntimeError(f"the edge did not list {SYMBOLS} within {timeout} s")


def edge_conflated(port: int) -> int | None:
    """Quotes the edge dropped for a behind client (a newer quote of the same symbol replaced
    a queued one, past half its queue limit): ``tickstream_edge_conflated_quotes_total``. None
    when the edge did not answer within 3 s (an event loop too busy to serve /metrics)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=3).text
    except httpx.HTTPError:
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith("tickstream_edge_conflated_quotes_total"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


class E2E:
    """Feed and edge for one end-to-end run (pinned to the server CPU, or not)."""

    def __init__(self, pin: bool) -> None:
        self.server_cpu, self.client_cpu = (SERVER_CPU, CLIENT_CPU) if pin else (None, None)
        self.procs: list[Proc] = []
        self.spies: list[subprocess.Popen[bytes]] = []
        self.marks: dict[str, float] = {}

    def __enter__(self) -> E2E:
        try:
            self.feed, self.feed_port = start_feed(LOGS / "e2e", self.server_cpu)
            self.procs.append(self.feed)
            self.edge, self.edge_port = start_edge(self.feed_port, LOGS / "e2e", self.server_cpu)
            self.procs.append(self.edge)
            declare_symbols(self.feed_port)
            wait_symbols(self.edge_port)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        for process in self.spies:
            if process.poll() is None:
                process.kill()
                process.wait()
        for proc in reversed(self.procs):
            proc.stop()

    def load(self, t0: float, profile: bool) -> dict[str, Any]:
        """The SSE client's figures (started with the producers); py-spy over its window."""

        def window(edge_of: str) -> None:
            self.marks[edge_of] = time.time() - t0
            if profile and edge_of == "start":
                for name, pid in (("feed", self.feed.pid), ("edge", self.edge.pid)):
                    self.spies.append(spy(pid, profile_path(name), E2E_S))

        # The client connects now, while the producer is still starting (``START_DELAY_S``):
        # its window opens ``E2E_WARMUP_S`` later, with the flood under way. (Connecting during
        # a flood is another matter: the edge may answer only after its 5 s upstream timeout.)
        figures = run_load(
            self.edge_port,
            "/sse?symbols=" + ",".join(SYMBOLS),
            1,
            E2E_S,
            warmup=E2E_WARMUP_S,
            check_ids=True,
            on_window=window,
            cpu=self.client_cpu,
        )
        figures["edge_conflated_quotes"] = edge_conflated(self.edge_port)
        for process in self.spies:
            process.wait(30)
        return figures


def run_e2e_once(pin: bool, profile: bool = False, rate: float = 0) -> Row:
    """1 producer -> feed -> edge -> one SSE client on the producer's four symbols, the
    producer as fast as acknowledged or paced at ``rate`` ticks/s."""
    seconds = E2E_WARMUP_S + E2E_S + 2
    with E2E(pin) as run:
        target = f"127.0.0.1:{run.feed_port}"
        with producers(target, seconds, rate=rate, cpu=run.client_cpu) as (t0, figs):
            samplers = [Sampler([run.feed.pid], t0, 0.5), Sampler([run.edge.pid], t0, 0.5)]
            load = run.load(t0, profile)
        for sampler in samplers:
            sampler.stop()
    first, last = run.marks["start"], run.marks["end"]
    return {
        "scenario": "e2e",
        "pinned": pin,
        "profiled": profile,
        "paced_at": rate or None,
        "producers": 1,
        "dedup_ids": True,
        "ticks_per_s": load["events_per_s"],
        "acked_ticks_per_s": acked_between(figs, first, last),
        "feed_cpu": samplers[0].cpu_share(first, last),
        "edge_cpu": samplers[1].cpu_share(first, last),
        "feed_rss_mib": samplers[0].rss_mib(last),
        "edge_rss_mib": [samplers[1].rss_mib(first), samplers[1].rss_mib(last)],
        "sse": load,
        **producer_summary(figs),
    }


def profile_path(name: str) -> Path:
    return RESULTS / f"{TODAY}-publish-{name}-profile.txt"


def whole(row: Row) -> bool:
    """Every tick reached the SSE client: no id gap, reset or disconnect, and the delivered
    rate kept up with the acknowledged one (within 5%)."""
    sse = row["sse"]
    lost = sse["id_gaps"] or sse["reset_events"] or sse["disconnect_events"] or sse["closed_early"]
    return not lost and row["ticks_per_s"] >= 0.95 * row["acked_ticks_per_s"] > 0


def run_e2e() -> list[Row]:
    """As fast as it can (pinned, not pinned, pinned under py-spy), then paced up the
    ``E2E_PACED`` ladder until a step is not delivered whole."""
    rows = []
    runs = [(True, False, 0), (False, False, 0), (True, True, 0)]
    runs += [(True, False, rate) for rate in E2E_PACED]
    for pin, profile, rate in runs:
        row = run_e2e_once(pin, profile, rate)
        if profile:
            row["profile"] = {n: summarise_profile(profile_path(n)) for n in ("feed", "edge")}
        row["whole"] = whole(row)
        rows.append(row)
        sse = row["sse"]
        say(
            f"e2e {'pinned' if pin else 'not pinned'}{' under py-spy' if profile else ''}"
            f"{f' paced at {rate:,.0f}/s' if rate else ''}: "
            f"{row['ticks_per_s']:,} ticks/s to the SSE client ({row['acked_ticks_per_s']:,} "
            f"acked), p50 {sse['p50_ms']} ms p99 {sse['p99_ms']} ms, id gaps {sse['id_gaps']}, "
            f"feed CPU {row['feed_cpu']}, edge CPU {row['edge_cpu']}"
        )
        if rate and not row["whole"]:
            break
    return rows


OUTER_FRAMES = frozenset(
    ("<module>", "_run_code", "_run_module_as_main", "main", "run", "Runner.run")
)  # the frames every event-loop sample sits under (their self time still counts)


def _frame(text: str) -> str:
    """``check_draft (feed_service/ingest.py:97)`` -> ``check_draft (feed_service/ingest.py)``."""
    name, _, where = text.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def summarise_profile(raw: Path, top: int = 12) -> Row:
    """From py-spy's collapsed stacks (``--threads``): each thread's share of the run's
    samples (1.0 = busy the whole window), and for the busiest thread its top functions by
    self time and by inclusive time, as percentages of that thread's samples."""
    if not raw.exists():
        return {"error": f"{raw.name} was not written"}
    per_thread: dict[str, int] = {}
    stacks: dict[str, list[tuple[list[str], int]]] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        parts = stack.split(";")
        thread = parts[0].split("): ", 1)[-1] or "?"
        frames = [_frame(p) for p in parts[1:]]
        per_thread[thread] = per_thread.get(thread, 0) + int(count)
        stacks.setdefault(thread, []).append((frames, int(count)))
    busiest = max(per_thread, key=lambda t: per_thread[t])
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    for frames, count in stacks[busiest]:
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + count
        for name in set(frames):
            inclusive[name] = inclusive.get(name, 0) + count
    total = per_thread[busiest]

    def ranked(counter: dict[str, int], skip: frozenset[str] = frozenset()) -> list[Any]:
        shares = ((n, round(100 * c / total, 1)) for n, c in counter.items())
        kept = [(n, s) for n, s in shares if n.split(" (")[0] not in skip]
        return sorted(kept, key=lambda item: -item[1])[:top]

    window = 100 * E2E_S  # samples a thread busy the whole window would have
    return {
        "thread_busy_share": {t: round(n / window, 2) for t, n in per_thread.items()},
        "busiest_thread": busiest,
        "self_pct": ranked(own),
        "inclusive_pct": ranked(inclusive, OUTER_FRAMES),
    }


def run_flood() -> list[Row]:
    """One producer as fast as it can for ``FLOOD_S`` s (``FLOOD_WINDOW`` batches in flight, so
    gRPC flow control, not the producer, holds it back): the feed's RSS every second."""
    extra = ("--dedup-window", str(FLOOD_DEDUP_WINDOW))
    feed, port = start_feed(LOGS / "flood", SERVER_CPU, *extra)
    try:
        idle_kib = rss_kib([feed.pid])
        with producers(f"127.0.0.1:{port}", FLOOD_S, window=FLOOD_WINDOW) as (t0, figs):
            sampler = Sampler([feed.pid], t0)
        samples = sampler.stop()
    finally:
        feed.stop()
    summary = producer_summary(figs)
    rss = [(t, kib) for t, kib, _cpu in samples if 0 <= t <= FLOOD_S + 1]
    row: Row = {
        "scenario": "flood",
        "producers": 1,
        "dedup_ids": True,
        "window": FLOOD_WINDOW,
        "seconds": FLOOD_S,
        "history_size": HISTORY,
        "dedup_window": FLOOD_DEDUP_WINDOW,
        "ticks_per_s": acked_rate(figs, FLOOD_S),
        "steady_ticks_per_s": acked_between(figs, FLOOD_S / 2, FLOOD_S),
        "feed_cpu": sampler.cpu_share(1, FLOOD_S),
        "rss_idle_mib": round(idle_kib / 1024, 1),
        "rss_mib_per_s": [(t, round(kib / 1024, 1)) for t, kib in rss],
        **summary,
        **bounded(rss, summary["acked_per_s_series"]),
    }
    row["slowed_not_failed"] = row["statuses"] == ["OK"] and not row["details"]
    say(
        f"flood {FLOOD_S} s: {row['ticks_per_s']:,} ticks/s acked, RSS {row['rss_min_mib']} -> "
        f"{row['rss_max_mib']} MiB (final {row['rss_final_mib']}), bounded: {row['bounded']}; "
        f"producer waited {row['window_wait_s'] + row['write_wait_s']:.1f} s of {FLOOD_S}, "
        f"status {row['statuses']}"
    )
    return [row]


def bounded(rss: list[tuple[float, int]], acked_per_s: list[int]) -> Row:
    """Did RSS stop growing once the history ring and the dedup window were full? Both hold
    at most a fixed count, so from the second both are full to the end, RSS (the mean of the
    last 5 samples against the first after filling) should grow by at most 5% (or 16 MiB)."""
    filled = running = 0
    for second, ticks in enumerate(acked_per_s):
        running += ticks
        if running >= max(HISTORY, FLOOD_DEDUP_WINDOW):
            filled = second + 1
            break
    mib = [kib / 1024 for _, kib in rss]
    out: Row = {
        "rss_min_mib": round(min(mib), 1),
        "rss_max_mib": round(max(mib), 1),
        "rss_final_mib": round(mib[-1], 1),
        "full_after_s": filled or None,
    }
    after = [kib / 1024 for t, kib in rss if filled and t >= filled + 1]
    if len(after) < 3:
        out["bounded"] = None
        out["bounded_note"] = "the history ring and dedup window did not fill early enough"
        return out
    tail = after[-5:]
    growth = sum(tail) / len(tail) - after[0]  # a trend, not one sample's spike
    out["growth_after_full_mib"] = round(growth, 1)
    out["spike_after_full_mib"] = round(max(after) - after[0], 1)
    out["bounded"] = growth <= max(16.0, 0.05 * after[0])
    return out


SCENARIOS: dict[str, Callable[[], list[Row]]] = {
    "feed": run_feed,
    "bare": run_bare,
    "e2e": run_e2e,
    "flood": run_flood,
}
START, END = "<!-- publish:start -->", "<!-- publish:end -->"


def _name(row: Row) -> str:
    count = f"{row['producers']} producer{'s' if row['producers'] > 1 else ''}"
    if row["scenario"] == "feed":
        return f"feed alone, {count}, dedup ids {'on' if row['dedup_ids'] else 'off'}"
    if row["scenario"] == "bare":
        how = "decoding each request" if row["server_decodes"] else "raw bytes, no decoding"
        return f"bare grpc.aio ack server ({how}), {count}"
    if row["scenario"] == "e2e":
        how = "pinned" if row["pinned"] else "not pinned"
        how += ", under py-spy" if row["profiled"] else ""
        how += f", paced at {row['paced_at']:,.0f} ticks/s" if row["paced_at"] else ""
        return f"end to end to one SSE client, {count}, {how}"
    return f"flood {row['seconds']} s, {count}, {row['window']} batches in flight"


def _target(row: Row) -> tuple[str, str]:
    """The target column and whether it is met."""
    if row["scenario"] == "e2e" and row["paced_at"]:
        return "every tick delivered", _yes(row["whole"])
    if row["scenario"] == "e2e" and not row["profiled"]:
        met = row["ticks_per_s"] >= TARGET and row["whole"]
        return f">= {TARGET:,} delivered, none lost", _yes(met)
    if row["scenario"] == "feed" and row["producers"] == 1:
        return f">= {TARGET:,} (needed for the e2e target)", _yes(row["ticks_per_s"] >= TARGET)
    if row["scenario"] == "flood":
        return "RSS bounded, producer slowed not failed", _yes(
            bool(row["bounded"]) and row["slowed_not_failed"]
        )
    return "reported", "n/a"


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _conflated(sse: Row) -> str:
    count = sse.get("edge_conflated_quotes")
    return "no answer from /metrics" if count is None else f"{count:,}"


def _detail(row: Row) -> str:
    if row["scenario"] == "e2e":
        sse = row["sse"]
        return (
            f"{row['acked_ticks_per_s']:,} acked; p50/p99 "
            + (f"{sse['p50_ms']}/{sse['p99_ms']} ms" if sse["events"] else "n/a (no events)")
            + f"; id gaps {sse['id_gaps']} (quotes conflated by the edge: {_conflated(sse)}), "
            f"resets {sse['reset_events']}; edge RSS "
            f"{row['edge_rss_mib'][0]} -> {row['edge_rss_mib'][1]} MiB over the window; feed CPU "
            f"{row['feed_cpu']}, edge CPU {row['edge_cpu']}, SSE client CPU "
            f"{sse['load_client_cpu']}"
        )
    if row["scenario"] == "flood":
        return (
            f"{row['steady_ticks_per_s']:,} in the last half; "
            f"RSS {row['rss_min_mib']}-{row['rss_max_mib']} MiB, final {row['rss_final_mib']} "
            f"(after the ring and dedup window filled at {row['full_after_s']} s: trend "
            f"{row.get('growth_after_full_mib', 'n/a')} MiB, highest sample "
            f"+{row.get('spike_after_full_mib', 'n/a')}); producer waited "
            f"{row['window_wait_s'] + row['write_wait_s']:.1f} s of {row['seconds']} "
            f"(in write {row['write_wait_s']} s), ack p99 {row['ack_ms_p99']} ms, "
            f"status {'/'.join(row['statuses'])}"
        )
    cpu = f"server CPU {row['server_cpu']}"
    if "steady_ticks_per_s" in row:
        cpu = f"{row['steady_ticks_per_s']:,} in the last half; " + cpu
    return f"{cpu}; producers' CPU {row['cpu_s'] / row['seconds']:.2f}; status " + "/".join(
        row["statuses"]
    )


def section(rows: list[Row], info: Row) -> list[str]:
    """The markdown block of bench/README.md between ``START`` and ``END``."""
    lines = [
        f"Run of {TODAY} on {info['cpu']} ({info['cpus']} CPUs, Python {info['python']}); "
        f"servers (feed + edge, or the ack server) on CPU {SERVER_CPU}, producers and the SSE "
        f"client on CPU {CLIENT_CPU} unless 'not pinned'. Batches of {BATCH} ticks, at most "
        f"{WINDOW} unacknowledged (flood: {FLOOD_WINDOW}); feed `--source none "
        f"--history-size {HISTORY:,}` (flood: `--dedup-window {FLOOD_DEDUP_WINDOW:,}`). Ticks/s "
        "are acknowledged ticks (delivered ones for the end-to-end rows), whole seconds after "
        "the first; CPU figures are cores (1.0 = one core busy). Load average before / after: "
        f"{info.get('loadavg_at_start')} / {info.get('loadavg_at_end')} (other work on the "
        "machine skews the figures).",
        "",
        "| scenario | ticks/s | target | met | details |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        target, met = _target(row)
        lines.append(
            f"| {_name(row)} | {row['ticks_per_s']:,.0f} | {target} | {met} | {_detail(row)} |"
        )
    for row in rows:
        for name, prof in row.get("profile", {}).items():
            lines += ["", *_profile_lines(name, prof)]
    lines += [
        "",
        f"Raw figures: `bench/results/{TODAY}-publish.json`; profiles (py-spy collapsed stacks, "
        f"per thread): `bench/results/{TODAY}-publish-feed-profile.txt`, `...-edge-profile.txt`.",
    ]
    return lines


def _profile_lines(name: str, prof: Row) -> list[str]:
    if "error" in prof:
        return [f"Profile of the {name}: {prof['error']}."]
    busy = ", ".join(f"{t} {s}" for t, s in sorted(prof["thread_busy_share"].items()))
    own = "; ".join(f"`{f}` {p}%" for f, p in prof["self_pct"][:8])
    inclusive = "; ".join(f"`{f}` {p}%" for f, p in prof["inclusive_pct"][:10])
    return [
        f"**Profile of the {name}** (end-to-end run, py-spy at 100 Hz; threads' busy share of "
        f"the window: {busy}). {prof['busiest_thread']}, self time: {own}. Inclusive: "
        f"{inclusive}.",
    ]


def write_readme(rows: list[Row], info: Row) -> None:
    readme = BENCH / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        say(f"README.md has no {START} block; left as it is")
        return
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + START + "\n" + "\n".join(section(rows, info)) + "\n" + END + tail)


def run_publish(only: list[str] | None = None, readme: bool = True) -> list[Row]:
    """Run the scenarios named in ``only`` (all by default), write
    ``results/<date>-publish.json`` and, with ``readme``, the README block; the rows."""
    from run import machine

    info = machine()
    # Other work on the machine skews every figure: the load average says how much there was.
    info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    rows: list[Row] = []
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{TODAY}-publish.json"
    for name in only or list(SCENARIOS):
        say(f"scenario {name} ...")
        rows += SCENARIOS[name]()
        path.write_text(json.dumps({"date": TODAY, "machine": info, "runs": rows}, indent=1))
    info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path.write_text(json.dumps({"date": TODAY, "machine": info, "runs": rows}, indent=1))
    say(f"wrote {path.relative_to(ROOT)}")
    if readme:
        write_readme(rows, info)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--no-readme", action="store_true", help="leave bench/README.md alone")
    args = parser.parse_args()
    started = time.monotonic()
    run_publish(args.only, readme=not args.no_readme)
    say(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
