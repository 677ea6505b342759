"""Process plumbing for the benchmarks: pinned servers, the C load client, /proc readings.

Servers run on CPU ``SERVER_CPU`` and the load client on ``CLIENT_CPU`` (``taskset``), all on
loopback. Every process started here is ended here, by its PID.
"""

from __future__ import annotations

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
    """A started process, its log file, and its readings from /proc."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

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
        popen = subprocess.Popen(
            pinned(cpu, args),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=_raise_nofile,
        )
    return Proc(name, popen, log)


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
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer 200 within {timeout} s")
        time.sleep(0.1)


@dataclass
class LoadResult:
    figures: dict[str, object]
    samples: dict[str, float] = field(default_factory=dict)


CLIENTS_PER_PROCESS = 15_000  # below the per-process open-files limit here (20,000)


def run_load(
    port: int,
    path: str,
    clients: int,
    seconds: float,
    *,
    warmup: float = 1.5,
    check_ids: bool = False,
    on_window: Callable[[str], None] | None = None,
    connect_timeout: float = 20,
    cpu: str | None = CLIENT_CPU,
) -> dict[str, object]:
    """Run the C load client against ``http://127.0.0.1:port/path`` on ``cpu`` (None: not
    pinned); its JSON figures.

    More than ``CLIENTS_PER_PROCESS`` clients are split over several client processes (all on
    the client CPU); their counts are summed and their latency percentiles are the worst of the
    processes'. ``on_window("start")`` and ``on_window("end")`` are called about when the
    measurement window opens and closes (after every connection has its headers + ``warmup``),
    so a caller can read server CPU and memory over the same window.
    """
    processes = -(-clients // CLIENTS_PER_PROCESS)
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    popens = []
    ready = threading.Semaphore(0)
    for index, share in enumerate(shares):
        args = [str(build_load_client()), "127.0.0.1", str(port), path, str(share), str(seconds)]
        args += ["--warmup", str(warmup), "--source-ips", str(2 + index)]
        args += ["--connect-timeout", str(connect_timeout)]
        if check_ids:
            args.append("--check-ids")
        popen = subprocess.Popen(
            pinned(cpu, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        popens.append(popen)
        threading.Thread(target=_watch_stderr, args=(popen, ready), daemon=True).start()
    try:
        deadline = time.monotonic() + connect_timeout + 30
        for _ in popens:
            while not ready.acquire(timeout=0.2):
                if any(p.poll() is not None for p in popens):
                    raise RuntimeError("the load client exited before it was ready")
                if time.monotonic() > deadline:
                    raise RuntimeError("the load client never reported ready")
        if on_window is not None:
            time.sleep(warmup)
            on_window("start")
            time.sleep(seconds)
            on_window("end")
        outputs = [json.loads(p.communicate(timeout=seconds + warmup + 60)[0]) for p in popens]
    finally:
        for popen in popens:
            if popen.poll() is None:
                popen.kill()
                popen.wait()
    return _merge(outputs)


def _watch_stderr(popen: subprocess.Popen[str], ready: threading.Semaphore) -> None:
    assert popen.stderr is not None
    for line in popen.stderr:
        if line.startswith("ready"):
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
        elif key == "load_client_cpu":
            merged[key] = round(sum(values), 2)  # type: ignore[arg-type]
        elif key == "load_client_saturated":
            merged[key] = sum(values) > 0.9  # type: ignore[arg-type]
        elif isinstance(value, (int, float)):
            merged[key] = sum(values)  # type: ignore[arg-type]
    merged["load_client_processes"] = len(outputs)
    return merged
