"""``make chaos``: the cluster under a real-rate replay, a producer and SSE clients, broken by a
seeded fault schedule; then the independent checker (``chaos/checker.py``) reads what every
client received and what the producer had acknowledged.

    python -m chaos.run --seed 7 --duration 80 --clients 200 [--dir DIR] [--drop-trade N]

Prints the faults as they happen, then the checker's figures and the seed; exits 1 on any
violation. ``--drop-trade N`` runs the deliberately broken build (each edge leaves out the Nth
live trade it receives): the checker must then fail, naming the client, symbol and offset.
Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from chaos.checker import check
from chaos.faults import Fault, plan
from chaos.producer import acknowledged_offset, last_acknowledged
from chaos.stack import PRODUCER_SYMBOL, SYMBOLS, Stack
from chaos.swarm import Client, make_clients, stall
from edge_service.upstream import DROP_TRADE_ENV

SETTLE_S = 3.0  # after the last fault, before the clients are marked
DELIVERY_S = 40.0  # for every client to get the producer's last trade (see Run.delivered)
CATCHING_UP_S = 30.0  # at most, more for clients still catching up
PROGRESS_S = 5.0  # a client catching up gains within this


def arrived(client: Client) -> bool:
    """``client`` got a tick of each replayed symbol after the mark, and the awaited producer
    trade if it takes the producer's symbol."""
    assert client.since_mark is not None
    if not set(client.symbols) - {PRODUCER_SYMBOL} <= client.since_mark:
        return False
    return PRODUCER_SYMBOL not in client.symbols or client.got_awaited


class Run:
    """One chaos run over ``stack`` with ``clients``."""

    def __init__(self, stack: Stack, clients: list[Client], seed: int) -> None:
        self.stack, self.clients, self.seed = stack, clients, seed
        self.rng = random.Random(seed + 1)
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.done: Counter[str] = Counter()
        self.started = time.monotonic()

    async def inject(self, fault: Fault) -> None:
        """Apply ``fault`` and undo it after its hold (blocking steps in a thread)."""
        stack = self.stack
        print(f"  {fault}", flush=True)
        if fault.action == "kill":
            stack.kill(fault.target, fault.index)
            await asyncio.sleep(fault.hold)
            await asyncio.to_thread(stack.restart, fault.target, fault.index)
        elif fault.action == "stop":
            stack.pause(fault.target, fault.index)
            await asyncio.sleep(fault.hold)
            stack.resume(fault.target, fault.index)
        elif fault.action == "producer":
            stack.kill_producer()
            await asyncio.sleep(fault.hold)
            stack.start_producer()
        elif fault.action == "churn":
            for client in self.rng.sample(self.clients, max(1, len(self.clients) // 10)):
                client.cut.set()
        elif fault.action == "stall":
            edge = self.rng.choice(stack.edge_urls)
            self.tasks.append(asyncio.create_task(stall(edge, SYMBOLS[:2], self.stop)))
        self.done[f"{fault.action} {fault.target}".strip()] += 1

    async def faults(self, schedule: list[Fault]) -> None:
        for fault in schedule:
            await asyncio.sleep(max(0.0, fault.at - (time.monotonic() - self.started)))
            await self.inject(fault)

    async def delivered(self) -> list[Client]:
        """Wait (bounded) until every client that stayed got a tick of each of its symbols
        after the mark, and the producer's last acknowledged trade where it subscribed; the
        clients that did not.

        DELIVERY_S at first, then (up to CATCHING_UP_S more) while a client still short of the
        producer's last acknowledged offset keeps gaining on it: on a loaded machine the
        heaviest streams can end the faults tens of seconds behind, still in order. Each client
        keeps what this needs as its events arrive: rescanning every client's lines four times a
        second took most of this process's CPU just when those streams had the most to read."""
        journal = self.stack.directory / "producer.jsonl"
        last, target = f"p{last_acknowledged(journal)}", acknowledged_offset(journal)
        waiting = [c for c in self.clients if c.role != "left"]
        for client in waiting:
            client.await_trade(last)
        start = time.monotonic()
        offsets = {c.name: c.offset for c in waiting}
        while waiting:
            await asyncio.sleep(0.25)
            waiting = [c for c in waiting if not arrived(c)]
            waited = time.monotonic() - start
            if waited < DELIVERY_S or not waiting:
                continue
            gaining = [c for c in waiting if offsets[c.name] < c.offset < target]
            if waited >= DELIVERY_S + CATCHING_UP_S or not gaining:
                break
            offsets = {c.name: c.offset for c in waiting}
            await asyncio.sleep(PROGRESS_S)
        print(f"  delivery wait {time.monotonic() - start:.1f}s (offset {target})", flush=True)
        return waiting

    async def run(self, duration: float) -> None:
        counts = {"feed": 2, "edge": 2, "nats": 3}
        schedule = plan(self.seed, duration, counts)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        timeout = httpx.Timeout(10, read=None)
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
            for client in self.clients:
                self.tasks.append(
                    asyncio.create_task(client.run(http, self.stack.edge_urls, self.stop))
                )
                await asyncio.sleep(0.005)
            await self.faults(schedule)
            await asyncio.sleep(max(0.0, duration - (time.monotonic() - self.started)))
            await asyncio.sleep(SETTLE_S)
            for client in self.clients:
                client.mark()
            self.stack.stop_producer()
            if late := await self.delivered():
                where = ", ".join(f"{c.name} at offset {c.offset}" for c in late[:12])
                print(f"  {len(late)} clients still missed ticks after the wait: {where}")
            self.stop.set()
            await asyncio.gather(*self.tasks, return_exceptions=True)


def write_results(stack: Stack, clients: list[Client], seed: int, faults: Counter[str]) -> None:
    directory = stack.directory / "clients"
    directory.mkdir(exist_ok=True)
    for client in clients:
        client.dump(directory)
    run = {"producer_symbol": PRODUCER_SYMBOL, "seed": seed, "faults": dict(faults)}
    (stack.directory / "run.json").write_text(json.dumps(run), "utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=80.0, help="seconds of faults")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--dir", help="where state and recordings go (default: a temp dir)")
    parser.add_argument("--drop-trade", type=int, default=0, help="the broken build: see above")
    args = parser.parse_args()
    directory = Path(args.dir or tempfile.mkdtemp(prefix="tickstream-chaos-"))
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    env = {DROP_TRADE_ENV: str(args.drop_trade)} if args.drop_trade else {}
    stack = Stack(directory, env)
    clients = make_clients(args.clients, SYMBOLS, random.Random(args.seed))
    print(
        f"chaos: seed {args.seed}, {args.duration:.0f}s of faults, {len(clients)} clients, "
        f"state and recordings in {directory}",
        flush=True,
    )
    run = None
    try:
        stack.start()
        run = Run(stack, clients, args.seed)
        asyncio.run(run.run(args.duration))
    finally:
        stack.stop()
    write_results(stack, clients, args.seed, run.done if run else Counter())
    report = check(directory)
    for violation in report.violations[:40]:
        print("VIOLATION", violation)
    faults = ", ".join(
        f"{name} {count}" for name, count in sorted((run.done if run else {}).items())
    )
    print(f"chaos: seed {args.seed}; faults injected {sum(run.done.values())} ({faults})")
    print(f"chaos: {report.summary()}")
    return 1 if report.violations else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
