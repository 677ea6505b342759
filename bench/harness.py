"""Process plumbing for the benchmarks: pinned servers, the C load client, /proc readings.

Servers run on CPU ``SERVER_CPU`` and the load client on ``CLIENT_CPU`` (``taskset``), all on
loopback. Every process started here is ended here, by its PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BUILD = BENCH / ".build"
PY = sys.executable
SERVER_CPU = "0"
CLIENT_CPU = "1"
NOFILE = 65_536
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpu: str | None, args: list[str]) -> list[str]:
    """``args`` run on ``cpu`` (taskset); unchanged when ``cpu`` is None (not pinned)."""
    return ["taskset", "-c", cpu, *args] if cpu is not None and shutil.which("taskset") else args


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, max(hard, NOFILE)))
    except (ValueError, OSError):  # not root: keep what we have
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def build_load_client() -> Path:
    """Compile ``bench/sseload.c`` with gcc -O2 (when the source is newer); the binary's path."""
    binary = BUILD / "sseload"
    source = BENCH / "sseload.c"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        BUILD.mkdir(exist_ok=True)
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(source)], check=True)
    return binary


@dataclass
class Proc:
    """A started process, its log file (appended to: this process's output starts at byte
    ``log_start``), and its readings from /proc."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    log_start: int = 0

    def output(self) -> str:
        """What this process wrote to its log so far."""
        with self.log.open("rb") as log:
            log.seek(self.log_start)
            return log.read().decode(errors="replace")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout: float = 10) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def start(name: str, args: list[str], logs: Path, cpu: str | None = SERVER_CPU) -> Proc:
    """Start ``args`` pinned to ``cpu`` (None: not pinned) with a raised open-files limit;
    output to ``logs``."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        log_start = out.tell()
        popen = subprocess.Popen(
            pinned(cpu, args),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=_raise_nofile,
        )
    return Proc(name, popen, log, log_start)


def rss_kib(pids: list[int]) -> int:
    """Resident set size of ``pids`` together, in KiB (VmRSS from /proc)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    """Direct child PIDs of ``pid`` (e.g. nginx workers)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except FileNotFoundError:
        return []


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (e.g. an edge's worker processes)."""
    tree, index = [pid], 0
    while index < len(tree):
        tree += children(tree[index])
        index += 1
    return tree


def tree_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of ``pids`` and their descendants, those that still run."""
    total = 0.0
    for pid in {p for root in pids for p in process_tree(root)}:
        with contextlib.suppress(FileNotFoundError):
            total += cpu_seconds(pid)
    return total


class ServerStartError(RuntimeError):
    """A server process exited before it was ready; the message ends with its log's tail."""


def wait_http(url: str, timeout: float = 30, proc: Proc | None = None, workers: int = 1) -> None:
    """Until ``url`` answers 200 (from ``workers`` distinct edge workers, told apart by their
    ``X-Edge-Worker`` header: a worker not yet ready would refuse the first clients it is
    given); ServerStartError when ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    ready: set[str] = set()
    while True:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                ready.add(response.headers.get("x-edge-worker", ""))
                if len(ready) >= workers:
                    return
        except httpx.HTTPError:
            pass
        if proc is not None and proc.popen.poll() is not None:
            tail = proc.output().strip().splitlines()[-3:]
            raise ServerStartError(
                f"{proc.name} exited with {proc.popen.returncode}: " + " / ".join(tail)
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer 200 within {timeout} s")
        time.sleep(0.1)


def metric_samples(url: str, names: tuple[str, ...], timeout: float = 5) -> dict[str, float]:
    """The values of the unlabelled samples ``names`` in the Prometheus text at ``url``, those
    present; none when the server does not answer within ``timeout`` seconds."""
    try:
        text = httpx.get(url, timeout=timeout).text
    except httpx.HTTPError:
        return {}
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            found[name] = float(value.split()[0])
    return found


@dataclass
class LoadResult:
    figures: dict[str, object]
    samples: dict[str, float] = field(default_factory=dict)


CLIENTS_PER_PROCESS = 15_000  # below the per-process open-files limit here (20,000)


@dataclass(frozen=True)
class LoadPlan:
    """What the load client is asked for (see :func:`run_load`)."""

    port: int
    path: str
    clients: int
    seconds: float
    warmup: float = 1.5
    check_ids: bool = False
    check_seq: bool = False
    connect_timeout: float = 20
    start_at_ns: int | None = None
    cpu: str | None = CLIENT_CPU

    def args(self, clients: int, index: int) -> list[str]:
        args = [str(build_load_client()), "127.0.0.1", str(self.port), self.path]
        args += [str(clients), str(self.seconds), "--warmup", str(self.warmup)]
        args += ["--source-ips", str(2 + index), "--connect-timeout", str(self.connect_timeout)]
        args += ["--check-ids"] if self.check_ids else ["--check-seq"] if self.check_seq else []
        args += ["--start-at", str(self.start_at_ns)] if self.start_at_ns else []
        return pinned(self.cpu, args)

    def until_window(self) -> float:
        """Seconds from ready to the window's opening."""
        if self.start_at_ns is None:
            return self.warmup
        return max(self.warmup, (self.start_at_ns - time.time_ns()) / 1e9)


def run_load(
    port: int,
    path: str,
    clients: int,
    seconds: float,
    *,
    on_window: Callable[[str], None] | None = None,
    **options: Any,
) -> dict[str, object]:
    """Run the C load client against ``http://127.0.0.1:port/path``; its JSON figures.
    ``options`` are :class:`LoadPlan`'s: ``warmup``, ``check_ids`` / ``check_seq``,
    ``connect_timeout``, ``start_at_ns`` (open the window at this wall-clock time at the
    earliest) and ``cpu`` (None: not pinned).

    More than ``CLIENTS_PER_PROCESS`` clients are split over several client processes (all on
    the client CPU); their counts are summed and their latency percentiles are the worst of the
    processes'. ``on_window`` is called with ``"launch"`` just before the clients start
    connecting, ``"ready"`` when every connection has its headers (or the connect window
    passed), and ``"start"`` and ``"end"`` about when the measurement window opens and closes,
    so a caller can read server CPU and memory over each stretch.
    """
    plan = LoadPlan(port, path, clients, seconds, **options)
    processes = -(-clients // CLIENTS_PER_PROCESS)
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    ready = threading.Semaphore(0)
    at_ready: list[int] = []  # each process's connections with headers when it said "ready"
    popens: list[subprocess.Popen[str]] = []
    if on_window is not None:
        on_window("launch")
    try:
        for index, share in enumerate(shares):
            popens.append(_launch(plan.args(share, index), ready, at_ready))
        _wait_ready(popens, ready, plan.connect_timeout + 30)
        waited = plan.until_window()
        if on_window is not None:
            on_window("ready")
            time.sleep(waited)
            on_window("start")
            time.sleep(seconds)
            on_window("end")
        timeout = seconds + waited + 60
        outputs = [json.loads(p.communicate(timeout=timeout)[0]) for p in popens]
    finally:
        for popen in popens:
            if popen.poll() is None:
                popen.kill()
                popen.wait()
    return _merge(outputs) | {"connected_at_ready": sum(at_ready)}


def _launch(
    args: list[str], ready: threading.Semaphore, at_ready: list[int]
) -> subprocess.Popen[str]:
    popen = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watcher = threading.Thread(target=_watch_stderr, args=(popen, ready, at_ready), daemon=True)
    watcher.start()
    return popen


def _wait_ready(
    popens: list[subprocess.Popen[str]], ready: threading.Semaphore, timeout: float
) -> None:
    """Until every load-client process said "ready"; RuntimeError when one exits or
    ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    for _ in popens:
        while not ready.acquire(timeout=0.2):
            if any(p.poll() is not None for p in popens):
                raise RuntimeError("the load client exited before it was ready")
            if time.monotonic() > deadline:
                raise RuntimeError("the load client never reported ready")


def _watch_stderr(
    popen: subprocess.Popen[str], ready: threading.Semaphore, at_ready: list[int]
) -> None:
    """Release ``ready`` on the client's "ready N" line (N into ``at_ready``); echo the rest."""
    assert popen.stderr is not None
    for line in popen.stderr:
        if line.startswith("ready"):
            at_ready.append(int(line.split()[1]))
            ready.release()
        else:
            print(f"    load client: {line.rstrip()}", file=sys.stderr)


def _merge(outputs: list[dict[str, object]]) -> dict[str, object]:
    if len(outputs) == 1:
        return outputs[0]
    merged = dict(outputs[0])
    for key, value in outputs[0].items():
        values = [o[key] for o in outputs]
        if key.endswith("_ms") or key == "seconds":
            merged[key] = max(values)  # type: ignore[type-var]
        elif key == "window_start_unix_ns":
            merged[key] = min(values)  # type: ignore[type-var]
        elif key == "load_client_cpu":
            merged[key] = round(sum(values), 2)  # type: ignore[arg-type]
        elif key == "load_client_saturated":
            merged[key] = sum(values) > 0.9  # type: ignore[arg-type]
        elif isinstance(value, (int, float)):
            merged[key] = sum(values)  # type: ignore[arg-type]
    merged["load_client_processes"] = len(outputs)
    return merged
