"""``make run-cluster``: tickstream beyond one machine, on loopback.

    browsers ──▶ nginx :8080 ──▶ edge-a :8001 ─┐   ┌─▶ feed-a :50051 (replays the bundled data)
                (least_conn)  └▶ edge-b :8002 ─┴─▶─┴─▶ feed-b :50052 (producers only)
                                                          │ both read and write one stream
                                     NATS JetStream: nats-1 :4222, nats-2 :4223, nats-3 :4224
                                     (one cluster, the stream TICKS kept on all three)

Each edge is given both feed replicas (in opposite orders) and fails over between them; nginx
(``deploy/nginx-cluster.conf``) spreads clients over the edges and sends a reconnecting one, with
its Last-Event-ID, to whichever is up. Without nginx installed, the edges are served directly.

Ports: NATS_PORTS, NATS_ROUTE_PORTS, FEED_PORTS, FEED_METRICS_PORTS, EDGE_PORTS (comma-separated)
and PROXY_PORT;
state (JetStream files, nginx scratch) goes to CLUSTER_DIR (default .cluster/). Ctrl-C (or
SIGTERM) stops everything.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "binance" / "spot"
NGINX_CONF = ROOT / "deploy" / "nginx-cluster.conf"
NATS_SERVER = Path(sys.executable).parent / "nats-server"
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def ports(name: str, default: str) -> list[int]:
    return [int(port) for port in os.environ.get(name, default).split(",")]


def render_nginx(directory: Path, listen: int, edges: list[int]) -> str:
    """deploy/nginx-cluster.conf for loopback: ``listen`` and the edges' ports in place of the
    compose services, its pid, temp paths and logs in ``directory``."""
    text = NGINX_CONF.read_text("utf-8")
    lines = "".join(
        f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;\n" for port in edges
    )
    text, count = re.subn(r"( *server edge-\w+:8000[^\n]*\n)+", lines, text)
    assert count == 1, "one block of edge servers"
    text, count = re.subn(r"listen 8080;", f"listen 127.0.0.1:{listen};", text)
    assert count == 1, "one listen line"
    scratch = "".join(f"    {name}_temp_path {directory}/{name};\n" for name in TEMP_PATHS)
    scratch += f"    access_log {directory}/access.log;\n"
    text = text.replace("http {\n", "http {\n" + scratch, 1)
    return f"pid {directory}/nginx.pid;\n" + text


def nginx_command(directory: Path, listen: int, edges: list[int]) -> list[str] | None:
    """The nginx command line serving the edges on ``listen``; None without nginx."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        return None
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)  # workers may run as nobody
    conf = directory / "nginx.conf"
    conf.write_text(render_nginx(directory, listen, edges))
    return [binary, "-p", f"{directory}/", "-c", str(conf), "-e", str(directory / "error.log")]


def nats_commands(state: Path, nats: list[int], routes: list[int]) -> list[list[str]]:
    """One clustered JetStream nats-server per port, each routing to all the others."""
    started = []
    for index, (port, route) in enumerate(zip(nats, routes, strict=True), 1):
        peers = ",".join(f"nats://127.0.0.1:{r}" for r in routes if r != route)
        store = state / f"nats-{index}"
        server = [str(NATS_SERVER), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)]
        cluster = ["--cluster_name", "tickstream", "--cluster", f"nats://127.0.0.1:{route}"]
        started.append([*server, "-n", f"nats-{index}", *cluster, "--routes", peers])
    return started


def commands(state: Path) -> list[list[str]]:
    """Every process of the cluster, in start order: NATS nodes, feeds, edges, nginx."""
    nats = ports("NATS_PORTS", "4222,4223,4224")
    routes = ports("NATS_ROUTE_PORTS", "6222,6223,6224")
    feeds, edges = ports("FEED_PORTS", "50051,50052"), ports("EDGE_PORTS", "8001,8002")
    metrics = ports("FEED_METRICS_PORTS", "9464,9465")
    started = nats_commands(state, nats, routes)
    backbone = ["--backbone", "nats", "--nats-replicas", str(min(3, len(nats)))]
    backbone += ["--nats-url", ",".join(f"nats://127.0.0.1:{port}" for port in nats)]
    replay = ["--source", "replay", "--replay-path", str(DATA), "--speed", "1", "--loop"]
    python = [sys.executable, "-m"]
    for port, metric, source in zip(feeds, metrics, [replay, ["--source", "none"]], strict=True):
        feed = ["feed_service", "--port", str(port), "--metrics-port", str(metric)]
        started.append([*python, *feed, *source, *backbone])
    targets = [f"127.0.0.1:{port}" for port in feeds]
    for index, port in enumerate(edges):
        order = ",".join(targets[index:] + targets[:index])
        started.append([*python, "edge_service", "--port", str(port), "--feed-target", order])
    proxy = nginx_command(state / "nginx", int(os.environ.get("PROXY_PORT", "8080")), edges)
    if proxy is not None:
        started.append([*proxy, "-g", "daemon off;"])
    return started


def wait_ready(url: str, children: list[subprocess.Popen[bytes]], within: float = 90) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and all(c.poll() is None for c in children):
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    return False


def main() -> int:
    state = Path(os.environ.get("CLUSTER_DIR", ROOT / ".cluster"))
    state.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    children = [subprocess.Popen(command, cwd=ROOT, env=env) for command in commands(state)]

    def stop(signum: int, _frame: object) -> None:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    proxied = children[-1].args[0] != sys.executable
    port = os.environ.get("PROXY_PORT", "8080") if proxied else str(ports("EDGE_PORTS", "8001")[0])
    base = f"http://127.0.0.1:{port}"
    if wait_ready(f"{base}/readyz", children):
        print(picture(), flush=True)
        how = "" if proxied else " (no nginx: edge-a served directly)"
        print(
            f"\ntickstream cluster is up{how}:\n"
            f"  live page     {base}/\n"
            f"  SSE stream    curl -N {base}/sse/BTCUSDT\n"
            f"  state         {state}\n"
            "Kill any feed replica, edge or NATS node: streams go on. Ctrl-C stops all.\n",
            flush=True,
        )
    watch(children)
    codes = [child.wait() for child in children]
    return next((code for code in codes if code not in (0, -signal.SIGTERM)), 0)


def watch(children: list[subprocess.Popen[bytes]]) -> None:
    """Until every child has ended (Ctrl-C or SIGTERM ends them): one that dies is reported,
    and the others go on, as a cluster does."""
    reported: set[int] = set()

    def report() -> None:
        for child in children:
            code = child.poll()
            if code not in (None, 0, -signal.SIGTERM) and child.pid not in reported:
                reported.add(child.pid)
                name = " ".join(str(part) for part in child.args[:4])
                print(f"run-cluster: {name} ... exited ({code})", flush=True)

    while any(child.poll() is None for child in children):
        report()
        time.sleep(0.5)
    report()  # one that died just before the rest were stopped


def picture() -> str:
    """The module's picture (drawn with the default ports) and the ports in use."""
    listing = ", ".join(
        f"{name} {value}"
        for name, value in (
            ("nginx", os.environ.get("PROXY_PORT", "8080")),
            ("edges", os.environ.get("EDGE_PORTS", "8001,8002")),
            ("feeds", os.environ.get("FEED_PORTS", "50051,50052")),
            ("NATS", os.environ.get("NATS_PORTS", "4222,4223,4224")),
        )
    )
    return __doc__.split("\n\n")[1] + f"\n\n  ports in use: {listing}"


if __name__ == "__main__":
    sys.exit(main())
