"""The three servers a scenario runs side by side, each pinned to the server CPU:

- ``tickstream``: the real feed (synthetic source, one symbol) and the real edge, together;
- ``nchan``: Debian's nginx with the Nchan module (one worker), fed by ``nchan_publisher.py``;
- ``baseline``: ``baseline_app.py``, a bare Starlette StreamingResponse fan-out.

Each serves an SSE stream of tick-shaped events at ``rate`` events per second per client, or,
with ``replay``, the bundled recording (BTCUSDT and ETHUSDT) at its recorded pace: the feed's
own replay source for tickstream, ``replay_ticks.py`` (the same ticks, pacing and event bytes)
in the Nchan publisher and in the baseline.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from harness import (
    BENCH,
    PY,
    SERVER_CPU,
    Proc,
    ServerStartError,
    children,
    free_port,
    metric_samples,
    process_tree,
    start,
    wait_http,
)
from replay_ticks import STARTED, SYMBOLS, recording_paths

REPLAY_SYMBOLS = ",".join(SYMBOLS)
# One write per client socket (being added to the edge); until it exists, events sent.
WRITE_COUNTERS = ("tickstream_edge_client_writes_total", "tickstream_edge_events_sent_total")

NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
NCHAN_CONF = """\
load_module {module};
worker_processes 1;
pid {dir}/nginx.pid;
events {{ worker_connections 30000; }}
http {{
    access_log off;
    keepalive_requests 1000000000;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /pub {{
            nchan_publisher;
            nchan_channel_id bench;
            nchan_message_buffer_length 1000;
            nchan_message_timeout 60s;
        }}
        location = /sse {{
            nchan_subscriber eventsource;
            nchan_channel_id bench;
            nchan_eventsource_event trade;
            nchan_subscriber_first_message newest;
            nchan_eventsource_ping_interval {ping};
        }}
        location ~ ^/pub/([A-Za-z0-9]+)$ {{
            nchan_publisher;
            nchan_channel_id $1;
            nchan_message_buffer_length 1000;
            nchan_message_timeout 60s;
        }}
        location = /replay {{
            nchan_subscriber eventsource;
            nchan_channel_id $arg_symbols;
            nchan_channel_id_split_delimiter ",";
            nchan_subscriber_first_message newest;
            nchan_eventsource_ping_interval {ping};
        }}
    }}
}}
"""


class Server:
    """A running server: ``port`` and ``path`` to subscribe to, ``memory_pids`` whose RSS is
    the server's, ``own_pids`` whose CPU (with their descendants) is the serving process's own
    (the edge, nginx, the baseline app: not the feed nor a publisher), ``feed_pid`` (tickstream
    only) for the feed's CPU per tick, ``started`` (monotonic) when its processes were started."""

    name = ""
    path = "/sse"
    check_ids = False
    check_seq = False

    def __init__(self) -> None:
        self.port = 0
        self.procs: list[Proc] = []
        self.memory_pids: list[int] = []
        self.own_pids: list[int] = []
        self.feed_pid: int | None = None
        self.feed_metrics_port: int | None = None
        self.started = time.monotonic()

    def client_writes(self) -> tuple[str, float] | None:
        """(counter name, value) of the server's count of client writes, where it has one."""
        return None

    def replay_started_ns(self) -> int:
        """When the replay's first batch was published (ns since the epoch), waiting for it;
        the Nchan publisher and the baseline print it (``replay_ticks.announce_start``)."""
        return _logged_start(self.procs[-1])

    def stop(self) -> None:
        """Stop every started process by its PID, then any of their descendants still running
        (an edge's workers, should they outlive it)."""
        started = {proc.pid for proc in self.procs}
        descendants = [
            Descendant.of(pid)
            for proc in self.procs
            for pid in process_tree(proc.pid)
            if pid not in started
        ]
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        for process in descendants:
            process.stop()


def replay_source() -> tuple[str, ...]:
    """Feed arguments: the bundled recording at 1x, looped (the latency scenario)."""
    paths = (arg for path in recording_paths() for arg in ("--replay-path", str(path)))
    return ("--source", "replay", "--speed", "1", "--loop", *paths)


class Tickstream(Server):
    """The real feed and edge. The feed's source is synthetic ticks of one symbol, BENCH, at
    ``rate`` per second, unless ``replay`` (the bundled recording, clients on both symbols).

    ``workers`` > 1 starts the edge with ``--workers N`` on CPUs ``edge_cpu``; an edge that
    exits instead (no such flag yet) raises harness.ServerStartError, every process stopped.
    """

    name = "tickstream"
    path = "/sse/BENCH"
    check_ids = True  # one symbol: offsets are consecutive, so a gap in ids is a lost tick

    def __init__(
        self,
        rate: float,
        logs: Path,
        ping: float = 15,
        replay: bool = False,
        workers: int = 1,
        edge_cpu: str = SERVER_CPU,
    ) -> None:
        super().__init__()
        feed_port, self.port = free_port(), free_port()
        self.feed_metrics_port = free_port()
        self.workers = workers
        source = replay_source() if replay else ("--symbols", "BENCH", "--rate", str(rate))
        if replay:
            self.path, self.check_ids = f"/sse?symbols={REPLAY_SYMBOLS}", False
        feed = start(
            "feed",
            [
                *(PY, "-m", "feed_service", "--port", str(feed_port), *source),
                *("--metrics-port", str(self.feed_metrics_port)),
                # Trades and quotes only: the figures stay comparable with earlier runs, and a
                # client's ids stay contiguous for --check-ids (bars take offsets of their own).
                *("--bar-intervals", ""),
            ],
            logs,
        )
        edge_args = [PY, "-m", "edge_service", "--port", str(self.port)]
        edge_args += ["--feed-target", f"127.0.0.1:{feed_port}", "--ping-interval", str(ping)]
        edge_args += ["--workers", str(workers)] if workers > 1 else []
        edge = start("edge", edge_args, logs, cpu=edge_cpu)
        self.feed_port = feed_port
        self.procs = [feed, edge]
        self.feed_pid, self.memory_pids, self.own_pids = feed.pid, [edge.pid], [edge.pid]
        try:
            wait_http(f"http://127.0.0.1:{self.port}/readyz", proc=edge, workers=workers)
        except Exception:
            self.stop()
            raise

    def client_writes(self) -> tuple[str, float] | None:
        """The edge's client-write counter from /metrics (with one worker only: a scrape of
        several workers reaches one of them), else its events-sent counter; None when neither."""
        if self.workers > 1:
            return None
        found = metric_samples(f"http://127.0.0.1:{self.port}/metrics", WRITE_COUNTERS)
        return next(((name, found[name]) for name in WRITE_COUNTERS if name in found), None)

    def replay_started_ns(self) -> int:
        """The first tick's ``ingestTime``: when the feed's replay published its first batch."""
        from tickstream.v1 import feed_pb2, feed_pb2_grpc

        request = feed_pb2.SubscribeRequest(symbols=list(SYMBOLS), earliest=True)
        with grpc.insecure_channel(f"127.0.0.1:{self.feed_port}") as channel:
            stub = feed_pb2_grpc.FeedServiceStub(channel)
            for response in stub.Subscribe(request, timeout=60):
                if response.WhichOneof("event") == "ticks" and response.ticks.ticks:
                    return int(response.ticks.ticks[0].ingest_time.ToNanoseconds())
        raise RuntimeError("the feed's Subscribe ended before its first tick")


class Nchan(Server):
    name = "nchan"

    @staticmethod
    def available() -> str | None:
        """None when nginx and the Nchan module are installed, else why not."""
        if not shutil.which("nginx"):
            return "nginx is not installed (Debian: apt-get install nginx libnginx-mod-nchan)"
        if not NCHAN_MODULE.exists():
            return f"{NCHAN_MODULE} is missing (Debian: apt-get install libnginx-mod-nchan)"
        return None

    def __init__(self, rate: float, logs: Path, ping: float = 15, replay: bool = False) -> None:
        super().__init__()
        self.port = free_port()
        # Synthetic: one channel, one publisher numbering it, so the data's sequence must run
        # on without a gap. Replay: a client multiplexes one channel per symbol.
        if replay:
            self.path = f"/replay?symbols={REPLAY_SYMBOLS}"
        self.check_seq = not replay
        root = logs / "nginx"
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)  # the worker runs as nobody
        conf = root / "nginx.conf"
        conf.write_text(
            NCHAN_CONF.format(module=NCHAN_MODULE, dir=root, port=self.port, ping=int(ping))
        )
        nginx = start(
            "nginx",
            [
                "nginx",
                "-p",
                f"{root}/",
                "-c",
                str(conf),
                "-e",
                str(root / "error.log"),
                "-g",
                "daemon off;",
            ],
            logs,
        )
        self.procs = [nginx]
        _wait_listening(self.port)
        feeding = ["--replay"] if replay else [str(rate)] if rate > 0 else []
        if feeding:
            publisher = [PY, str(BENCH / "nchan_publisher.py"), str(self.port), *feeding]
            self.procs.append(start("publisher", publisher, logs))
        self.memory_pids = [nginx.pid, *children(nginx.pid)]
        self.own_pids = [nginx.pid]


class Baseline(Server):
    name = "baseline"
    check_ids = True

    def __init__(self, rate: float, logs: Path, replay: bool = False) -> None:
        super().__init__()
        self.port = free_port()
        feeding = ["--replay"] if replay else [str(rate)]
        if replay:  # offsets run across both symbols, so ids still have no gap
            self.path = f"/sse?symbols={REPLAY_SYMBOLS}"
        app = start(
            "baseline", [PY, str(BENCH / "baseline_app.py"), str(self.port), *feeding], logs
        )
        self.procs = [app]
        self.memory_pids = self.own_pids = [app.pid]
        _wait_listening(self.port)


@dataclass(frozen=True)
class Descendant:
    """A process a started one started, known by PID and start time (so a PID reused after it
    ended is never signalled)."""

    pid: int
    started: str | None

    @staticmethod
    def of(pid: int) -> Descendant:
        return Descendant(pid, _start_time(pid))

    def stop(self, timeout: float = 5) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.started is None or _start_time(self.pid) != self.started:
                return  # ended (or the PID is another process's now)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _start_time(self.pid) == self.started:
                time.sleep(0.05)


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot); None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _logged_start(proc: Proc, timeout: float = 60) -> int:
    """The time in ``proc``'s "replay started at NS" log line, waiting for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in proc.output().splitlines():
            if line.startswith(STARTED):
                return int(line.split()[-1])
        if proc.popen.poll() is not None:
            raise ServerStartError(f"{proc.name} exited before its replay started")
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not start its replay within {timeout} s")


def _wait_listening(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open within {timeout} s")
