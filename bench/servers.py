"""The three servers a scenario runs side by side, each pinned to the server CPU:

- ``tickstream``: the real feed (synthetic source, one symbol) and the real edge, together;
- ``nchan``: Debian's nginx with the Nchan module (one worker), fed by ``nchan_publisher.py``;
- ``baseline``: ``baseline_app.py``, a bare Starlette StreamingResponse fan-out.

Each serves an SSE stream of tick-shaped events at ``rate`` events per second per client.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

from harness import BENCH, PY, Proc, children, free_port, start, wait_http

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
    }}
}}
"""


class Server:
    """A running server: ``port`` and ``path`` to subscribe to, ``memory_pids`` whose RSS is
    the server's, ``feed_pid`` (tickstream only) for the feed's CPU per tick."""

    name = ""
    path = "/sse"
    check_ids = False

    def __init__(self) -> None:
        self.port = 0
        self.procs: list[Proc] = []
        self.memory_pids: list[int] = []
        self.feed_pid: int | None = None
        self.feed_metrics_port: int | None = None

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


class Tickstream(Server):
    """The real feed and edge. The feed's source is synthetic ticks of one symbol, BENCH, at
    ``rate`` per second, unless ``source`` gives other feed arguments (e.g. a replay); then
    ``path`` should name the symbols that source serves."""

    name = "tickstream"
    path = "/sse/BENCH"
    check_ids = True  # one symbol: offsets are consecutive, so a gap in ids is a lost tick

    def __init__(
        self,
        rate: float,
        logs: Path,
        ping: float = 15,
        source: tuple[str, ...] | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__()
        feed_port, self.port = free_port(), free_port()
        self.feed_metrics_port = free_port()
        if source is None:
            source = ("--symbols", "BENCH", "--rate", str(rate))
        if path is not None:
            self.path, self.check_ids = path, False
        feed = start(
            "feed",
            [
                *(PY, "-m", "feed_service", "--port", str(feed_port), *source),
                *("--metrics-port", str(self.feed_metrics_port)),
            ],
            logs,
        )
        edge = start(
            "edge",
            [
                *(PY, "-m", "edge_service", "--port", str(self.port)),
                *("--feed-target", f"127.0.0.1:{feed_port}", "--ping-interval", str(ping)),
            ],
            logs,
        )
        self.procs = [feed, edge]
        self.feed_pid, self.memory_pids = feed.pid, [edge.pid]
        wait_http(f"http://127.0.0.1:{self.port}/readyz")


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

    def __init__(self, rate: float, logs: Path, ping: float = 15) -> None:
        super().__init__()
        self.port = free_port()
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
        if rate > 0:
            publisher = start(
                "publisher",
                [PY, str(BENCH / "nchan_publisher.py"), str(self.port), str(rate)],
                logs,
            )
            self.procs.append(publisher)
        self.memory_pids = [nginx.pid, *children(nginx.pid)]


class Baseline(Server):
    name = "baseline"
    check_ids = True

    def __init__(self, rate: float, logs: Path) -> None:
        super().__init__()
        self.port = free_port()
        app = start(
            "baseline", [PY, str(BENCH / "baseline_app.py"), str(self.port), str(rate)], logs
        )
        self.procs = [app]
        self.memory_pids = [app.pid]
        _wait_listening(self.port)


def _wait_listening(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open within {timeout} s")
