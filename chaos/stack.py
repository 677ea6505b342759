"""The cluster a chaos run breaks: three JetStream nats-servers (the stream on all three), two
feed replicas (``b`` replays the bundled recordings at their pace, in a loop; ``a`` takes
producers only), two edges (each given both replicas, in opposite orders) and the producer.

Every process can be killed or stopped and started again on its own port with its own state.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import (
    BTC_FILE,
    ETH_FILE,
    ROOT,
    ServiceProcess,
    nats_url,
    replay_args,
    start_edge,
    start_feed,
    start_nats,
    start_nats_cluster,
)

REPLAY = replay_args(BTC_FILE, ETH_FILE, speed="1", loop=True)
PRODUCER_SYMBOL = "CHAOS"
SYMBOLS = ["BTCUSDT", "ETHUSDT", PRODUCER_SYMBOL]


@dataclass
class Stack:
    """The processes of one run; ``directory`` holds their state and the recordings."""

    directory: Path
    edge_env: dict[str, str]  # for edges[0] only: the broken build is one bad edge
    nodes: list[ServiceProcess] = field(default_factory=list)
    feeds: list[ServiceProcess] = field(default_factory=list)
    edges: list[ServiceProcess] = field(default_factory=list)
    producer: subprocess.Popen[bytes] | None = None
    stopped: set[int] = field(default_factory=set)  # pids under SIGSTOP
    started: list[tuple[str, ServiceProcess]] = field(default_factory=list)  # for their logs

    # ----- start -----------------------------------------------------------------------------

    def start(self) -> None:
        self.nodes = start_nats_cluster(self.directory / "nats")
        self.started += [(f"nats{index}", node) for index, node in enumerate(self.nodes)]
        for index in range(2):
            self.feeds.append(start_feed(*self.feed_args(index)))
            self.started.append((f"feed{index}", self.feeds[-1]))
        for index in range(2):
            self.edges.append(self.start_edge(index, port=0))
            self.started.append((f"edge{index}", self.edges[-1]))
        self.start_producer()

    def feed_args(self, index: int) -> list[str]:
        source = REPLAY if index == 1 else ["--source", "none"]
        backbone = ["--backbone", "nats", "--nats-url", nats_url(*self.nodes)]
        return [*source, *backbone, "--nats-stream", "TICKS", "--nats-replicas", "3"]

    def start_edge(self, index: int, port: int) -> ServiceProcess:
        targets = [f"127.0.0.1:{feed.port}" for feed in self.feeds]
        if index == 1:
            targets.reverse()
        args = ["--feed-target", ",".join(targets), "--port", str(port)]
        return start_edge(0, *args, env=self.edge_env if index == 0 else None)

    def start_producer(self) -> None:
        feeds = ",".join(f"127.0.0.1:{feed.port}" for feed in self.feeds)
        command = [sys.executable, "-m", "chaos.producer", "--feeds", feeds]
        command += ["--symbol", PRODUCER_SYMBOL, "--out", str(self.directory / "producer.jsonl")]
        log = (self.directory / "producer.log").open("ab")
        self.producer = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=log)

    @property
    def edge_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{edge.port}" for edge in self.edges]

    # ----- faults ----------------------------------------------------------------------------

    def service(self, target: str, index: int) -> ServiceProcess:
        return {"feed": self.feeds, "edge": self.edges, "nats": self.nodes}[target][index]

    def kill(self, target: str, index: int) -> None:
        self.service(target, index).kill()

    def restart(self, target: str, index: int) -> None:
        """Start the killed ``target`` again on its port, with its state."""
        old = self.service(target, index)
        if target == "feed":
            self.feeds[index] = start_feed(*self.feed_args(index), port=old.port)
        elif target == "edge":
            self.edges[index] = self.start_edge(index, port=old.port)
        else:
            routes = [f"nats://127.0.0.1:{n.route_port}" for n in self.nodes if n is not old]
            self.nodes[index] = start_nats(
                self.directory / "nats" / f"n{index}",
                name=f"n{index}",
                port=old.port,
                route_port=old.route_port,
                routes=routes,
            )
        self.started.append((f"{target}{index}", self.service(target, index)))

    def pause(self, target: str, index: int) -> None:
        service = self.service(target, index)
        service.signal(signal.SIGSTOP)
        self.stopped.add(service.popen.pid)

    def resume(self, target: str, index: int) -> None:
        service = self.service(target, index)
        service.signal(signal.SIGCONT)
        self.stopped.discard(service.popen.pid)

    def kill_producer(self) -> None:
        if self.producer is not None and self.producer.poll() is None:
            self.producer.kill()
            self.producer.wait()

    # ----- stop ------------------------------------------------------------------------------

    def stop_producer(self) -> None:
        if self.producer is not None and self.producer.poll() is None:
            self.producer.terminate()
            try:
                self.producer.wait(10)
            except subprocess.TimeoutExpired:
                self.kill_producer()

    def stop(self) -> None:
        self.stop_producer()
        for service in [*self.edges, *self.feeds, *self.nodes]:
            if service.popen.pid in self.stopped:
                service.signal(signal.SIGCONT)
            service.stop()
        logs = self.directory / "logs"
        logs.mkdir(exist_ok=True)
        for name, service in self.started:  # each start of each process, in order
            with (logs / f"{name}.log").open("a", encoding="utf-8") as out:
                out.write(f"---- pid {service.popen.pid}\n" + "\n".join(service.lines) + "\n")
