"""The chaos run's fault schedule, drawn from a seed: the same seed gives the same faults at the
same times, so a failing run can be replayed.

Faults come one at a time, so the cluster's redundancy (two feed replicas, two edges, three NATS
nodes with the stream on all three) is what keeps the clients whole, never luck:

- ``kill``: SIGKILL of a feed replica, an edge or a NATS node, started again after ``hold`` s
  (on the same port, with the same state);
- ``stop``: SIGSTOP, then SIGCONT after ``hold`` s;
- ``producer``: SIGKILL of the producer while it publishes (a batch may be in flight), started
  again after ``hold`` s; it resends from its last acknowledged trade;
- ``churn``: a tenth of the clients drop their connection and come back with their
  Last-Event-ID;
- ``stall``: one more client connects and never reads.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TARGETS = ("feed", "edge", "nats")
WARM_UP_S = 3.0
GAP_S = (1.5, 4.0)  # between one fault's end and the next's start
HOLD_S = (1.0, 4.0)  # how long a process stays killed or stopped


@dataclass(frozen=True)
class Fault:
    """At ``at`` seconds from the start: ``action`` on ``target`` (``"feed"``/``"edge"``/
    ``"nats"`` with its ``index``; ``""`` for the producer and the clients), undone after
    ``hold`` seconds."""

    at: float
    action: str
    target: str = ""
    index: int = 0
    hold: float = 0.0

    def __str__(self) -> str:
        where = f" {self.target}[{self.index}]" if self.target else ""
        held = f" for {self.hold:.1f}s" if self.hold else ""
        return f"t={self.at:5.1f}s {self.action}{where}{held}"


def plan(seed: int, duration: float, counts: dict[str, int]) -> list[Fault]:
    """The faults of a run of ``duration`` seconds; ``counts`` is how many of each target run
    (e.g. ``{"feed": 2, "edge": 2, "nats": 3}``)."""
    rng = random.Random(seed)
    faults: list[Fault] = []
    at = WARM_UP_S
    while True:
        roll = rng.random()
        hold = round(rng.uniform(*HOLD_S), 1)
        if roll < 0.35:
            target = rng.choice(TARGETS)
            fault = Fault(at, "kill", target, rng.randrange(counts[target]), hold)
        elif roll < 0.6:
            target = rng.choice(TARGETS)
            fault = Fault(at, "stop", target, rng.randrange(counts[target]), hold)
        elif roll < 0.75:
            fault = Fault(at, "producer", hold=hold)
        elif roll < 0.9:
            fault = Fault(at, "churn")
        else:
            fault = Fault(at, "stall")
        if fault.at + fault.hold > duration:
            return faults
        faults.append(fault)
        at = round(fault.at + fault.hold + rng.uniform(*GAP_S), 1)
