"""The JetStream backbone (issue 12): ``python bench/run.py --only backbone``.

Everything runs on loopback, unpinned (three NATS nodes, two feeds, edges and clients share the
two CPUs; the load client alone is pinned to its CPU), in one run:

1. **Publish**: ticks/s one feed replica stores into a three-node JetStream cluster (stream
   replicas = 3) from ``producer.py`` (batches of 100, at most 16 unacknowledged; then batches
   of 1), beside the in-process hub with the same producer.
2. **Feed CPU per tick vs edges**: replica A takes a steady synthetic 1,000 ticks/s over four
   symbols, replica B takes none; 1, 10 and 50 edges, stood in by ``grpc_subscribers.py`` (an
   edge = one Subscribe per symbol), alternate between B and A. CPU of each replica over a 15 s
   window, divided by the ticks stored in it.
3. **Latency**: the bundled recording replayed at 1x, 100 SSE clients (the C load client) on an
   edge; in-process hub (feed + edge) against JetStream (A replays, the edge reads B, so every
   tick crosses the cluster), the windows opening 12 s into each replay: ingestTime -> client.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import (
    BENCH,
    PY,
    Proc,
    cpu_seconds,
    free_port,
    metric_samples,
    run_load,
    start,
    wait_http,
)
from servers import REPLAY_SYMBOLS, replay_source

NATS = Path(PY).parent / "nats-server"
Row = dict[str, Any]
EDGE_COUNTS = (1, 10, 50)
SYNTHETIC = ("--source", "synthetic", "--rate", "1000", "--symbols", "AAA,BBB,CCC,DDD")
WINDOW_S = 15.0
CLIENTS = 100
LEAD_S = 12


class Stack:
    """Processes started for one measurement; ``stop`` ends them all, by PID."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[Proc] = []
        self.nats_url = ""
        self.replicas = 1

    def nats_cluster(self, nodes: int = 3) -> None:
        """``nodes`` clustered JetStream nodes, each routing to the others (one: no cluster)."""
        self.replicas = nodes
        ports = [free_port() for _ in range(nodes)]
        if nodes == 1:
            store = self.logs / "nats-0"
            args = [str(NATS), "-a", "127.0.0.1", "-p", str(ports[0]), "-js", "-sd", str(store)]
            self.procs.append(start("nats-0", args, self.logs, cpu=None))
            self.nats_url = f"nats://127.0.0.1:{ports[0]}"
            return
        routes = [free_port() for _ in range(nodes)]
        for index, (port, route) in enumerate(zip(ports, routes, strict=True)):
            peers = ",".join(f"nats://127.0.0.1:{r}" for r in routes if r != route)
            store = self.logs / f"nats-{index}"
            args = [str(NATS), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)]
            args += ["-n", f"n{index}", "--cluster_name", "bench"]
            args += ["--cluster", f"nats://127.0.0.1:{route}", "--routes", peers]
            self.procs.append(start(f"nats-{index}", args, self.logs, cpu=None))
        self.nats_url = ",".join(f"nats://127.0.0.1:{port}" for port in ports)

    def feed(self, name: str, *args: str) -> tuple[Proc, int, int]:
        """A feed (on the cluster when one was started), SERVING; (proc, port, metrics port)."""
        port, metrics = free_port(), free_port()
        command = [PY, "-m", "feed_service", "--port", str(port), "--metrics-port", str(metrics)]
        if self.nats_url:
            command += ["--backbone", "nats", "--nats-url", self.nats_url]
            command += ["--nats-replicas", str(self.replicas)]
        proc = start(name, [*command, *args], self.logs, cpu=None)
        self.procs.append(proc)
        wait_serving(port, proc)
        return proc, port, metrics

    def edge(self, *targets: int) -> int:
        port = free_port()
        command = [PY, "-m", "edge_service", "--port", str(port), "--feed-target"]
        command.append(",".join(f"127.0.0.1:{target}" for target in targets))
        proc = start("edge", command, self.logs, cpu=None)
        self.procs.append(proc)
        wait_http(f"http://127.0.0.1:{port}/readyz", proc=proc, timeout=60)
        return port

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


def wait_serving(port: int, proc: Proc, within: float = 90) -> None:
    deadline = time.monotonic() + within
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert proc.popen.poll() is None, proc.output()[-2000:]
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"{proc.name} never SERVING:\n{proc.output()[-2000:]}")


def head_offset(metrics_port: int) -> float:
    found = metric_samples(
        f"http://127.0.0.1:{metrics_port}/metrics", ("tickstream_feed_head_offset",)
    )
    return found["tickstream_feed_head_offset"]


def publish_rates(logs: Path) -> list[Row]:
    """Ticks/s acknowledged to one producer by a replica on the cluster, and by the hub."""
    rows = []
    for backbone in ("memory", "nats"):
        for batch in (100, 1):
            stack = Stack(logs / f"publish-{backbone}-{batch}")
            try:
                if backbone == "nats":
                    stack.nats_cluster()
                _, port, _ = stack.feed("feed", "--source", "none")
                command = [PY, str(BENCH / "producer.py"), f"127.0.0.1:{port}", "8"]
                command += ["--batch", str(batch), "--window", "16"]
                done = subprocess.run(command, capture_output=True, text=True, timeout=120)
                figures = json.loads(done.stdout.strip().splitlines()[-1])
            finally:
                stack.stop()
            rate = figures["acked_ticks"] / figures["seconds"]
            rows.append(
                {
                    "measure": "publish",
                    "backbone": backbone,
                    "batch": batch,
                    "ticks_per_s": round(rate),
                    "ack_ms_p50": figures["ack_ms_p50"],
                    "ack_ms_p99": figures["ack_ms_p99"],
                }
            )
            print(
                f"backbone publish {backbone:6} batch {batch:3}: {rate:,.0f} ticks/s, "
                f"ack p50 {figures['ack_ms_p50']} ms",
                flush=True,
            )
    return rows


def cpu_per_tick(logs: Path) -> list[Row]:
    """Each replica's CPU per stored tick with 1, 10 and 50 edges reading them."""
    stack = Stack(logs / "cpu")
    rows = []
    try:
        stack.nats_cluster()
        a, a_port, a_metrics = stack.feed("feed-a", *SYNTHETIC)
        b, b_port, _ = stack.feed("feed-b", "--source", "none")
        for edges in EDGE_COUNTS:
            targets = f"127.0.0.1:{b_port},127.0.0.1:{a_port}"
            command = [PY, str(BENCH / "grpc_subscribers.py"), targets, str(edges)]
            command += ["AAA,BBB,CCC,DDD", str(WINDOW_S + 5)]
            readers = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            time.sleep(4)  # connected and reading
            nodes = [proc for proc in stack.procs if proc.name.startswith("nats")]
            before = reading(a, b, nodes, a_metrics)
            time.sleep(WINDOW_S)
            after = reading(a, b, nodes, a_metrics)
            out, _ = readers.communicate(timeout=60)
            ticks = after[3] - before[3]
            per_a, per_b, per_nats = ((after[i] - before[i]) / ticks * 1e6 for i in range(3))
            row = {
                "measure": "cpu_per_tick",
                "edges": edges,
                "ticks_per_s": round(ticks / WINDOW_S),
                "replica_a_us_per_tick": round(per_a, 1),
                "replica_b_us_per_tick": round(per_b, 1),
                "nats_nodes_us_per_tick": round(per_nats, 1),
                "subscribers": json.loads(out.strip().splitlines()[-1]),
            }
            rows.append(row)
            print(
                f"backbone cpu {edges:3} edges: A {per_a:.1f} us/tick, B {per_b:.1f} us/tick, "
                f"3 NATS nodes {per_nats:.1f} us/tick ({ticks / WINDOW_S:.0f} ticks/s)",
                flush=True,
            )
    finally:
        stack.stop()
    return rows


def reading(a: Proc, b: Proc, nodes: list[Proc], a_metrics: int) -> tuple[float, ...]:
    """CPU seconds of replica A, of B and of the NATS nodes together, and A's head offset."""
    nats_cpu = sum(cpu_seconds(node.pid) for node in nodes)
    return cpu_seconds(a.pid), cpu_seconds(b.pid), nats_cpu, head_offset(a_metrics)


def replay_started_ns(port: int) -> int:
    from tickstream.v1 import feed_pb2, feed_pb2_grpc

    request = feed_pb2.SubscribeRequest(symbols=REPLAY_SYMBOLS.split(","), earliest=True)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        for response in feed_pb2_grpc.FeedServiceStub(channel).Subscribe(request, timeout=60):
            if response.ticks.ticks:
                return int(response.ticks.ticks[0].ingest_time.ToNanoseconds())
    raise RuntimeError("no tick")


def latency(logs: Path, backbones: tuple[str, ...] = ("memory", "nats", "nats-1")) -> list[Row]:
    """Replay 1x, 100 clients: in-process hub against JetStream (three nodes, then one), in
    turn."""
    rows = []
    for backbone in backbones:
        stack = Stack(logs / f"latency-{backbone}")
        try:
            if backbone.startswith("nats"):
                stack.nats_cluster(1 if backbone == "nats-1" else 3)
                _, a_port, _ = stack.feed("feed-a", *replay_source())
                _, b_port, _ = stack.feed("feed-b", "--source", "none")
                edge = stack.edge(b_port)
            else:
                _, a_port, _ = stack.feed("feed", *replay_source())
                edge = stack.edge(a_port)
            start_at = replay_started_ns(a_port) + LEAD_S * 1_000_000_000
            figures = run_load(
                edge, f"/sse?symbols={REPLAY_SYMBOLS}", CLIENTS, WINDOW_S, start_at_ns=start_at
            )
        finally:
            stack.stop()
        row = {"measure": "latency", "backbone": backbone, "clients": CLIENTS, **figures}
        rows.append(row)
        print(
            f"backbone latency {backbone:6}: p50 {figures['p50_ms']} ms, p99 "
            f"{figures['p99_ms']} ms, {figures['events_per_s']} events/s",
            flush=True,
        )
    return rows


def run_backbone(logs: Path) -> list[Row]:
    return [*publish_rates(logs), *cpu_per_tick(logs), *latency(logs)]
