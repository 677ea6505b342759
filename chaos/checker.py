"""The chaos run's independent checker: reads what every client recorded and what the producer
had acknowledged, and lists every broken promise.

It shares no code with the services: it knows the wire (SSE ids ``<epoch>-<offset>``, each
tick's ``symbol`` and per (symbol, type) ``sequence``, a trade's ``tradeId``) and the promises
of ``../DESIGN.md``, nothing else. Its inputs, in a run directory:

- ``clients/<name>.jsonl``: a header line ``{"client", "symbols", "rated", "role"}``, then one
  array per thing the client saw, in order: ``["open", edge, last_event_id, s]`` per connection,
  ``[kind, id, symbol, sequence, trade_id]`` per event with a tick (``kind`` trade, quote or
  book; ``id`` "" for a snapshot value), ``["reset", id, epoch, reason]``,
  ``["disconnect", reason]`` for the edge's disconnect event, ``["end", why, s]`` when a
  connection closed (``s``: seconds into the run) and ``["mark"]`` when the faults were over.
- ``producer.jsonl``: ``{"first", "last", "epoch", "last_offset", "accepted", "duplicates"}``
  per acknowledged batch of the producer's trades, whose trade ids are ``p<number>``.
- ``run.json``: ``{"producer_symbol", "seed", "faults": {name: count}}``.

The promises checked, for every client (a client that stops reading is not recorded; one that
``left`` early is not expected to see the end):
- per (symbol, type) the sequence never repeats or goes back; trades never skip one (trades
  are never conflated), quotes and books may (their conflation policy drops superseded ones);
- offsets only grow within an epoch: no event twice;
- an epoch changes only through a ``reset``, and a ``reset`` comes only with a new epoch (the
  history covered every outage of the run, so a same-epoch reset lost the client's place);
- every tick the producer had acknowledged within the client's span arrived, once;
- after the faults were over (``mark``) each of its replayed symbols delivered again, and the
  producer's last acknowledged tick reached every client of its symbol.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

TICK_KINDS = ("trade", "quote", "book")


@dataclass
class Report:
    """What the checker found: ``violations`` must be empty."""

    clients: int = 0
    events: int = 0
    ticks: int = 0
    conflated: int = 0  # quotes and books skipped for rated clients (max_rate)
    conflated_unrated: int = 0  # and for the others (allowed only while one is behind)
    resets: int = 0
    reconnects: int = 0
    acknowledged: int = 0
    violations: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"clients {self.clients}, "
            f"reconnects {self.reconnects}, events {self.events}, ticks checked {self.ticks}, "
            f"producer ticks acknowledged {self.acknowledged}, quotes/books conflated "
            f"{self.conflated} for rated clients and {self.conflated_unrated} for the others, "
            f"resets {self.resets}, violations {len(self.violations)}"
        )


@dataclass
class _Tick:
    kind: str
    epoch: str
    offset: int
    symbol: str
    sequence: int
    trade_id: str


def _parse_id(event_id: str) -> tuple[str, int]:
    epoch, _, offset = event_id.rpartition("-")
    return epoch, int(offset)


@dataclass
class ClientLog:
    """One client's recording, parsed."""

    name: str
    symbols: list[str]
    rated: bool
    role: str
    lines: list[list[str]]

    @classmethod
    def read(cls, path: Path) -> ClientLog:
        with path.open(encoding="utf-8") as file:
            header = json.loads(file.readline())
            lines = [json.loads(line) for line in file if line.strip()]
        return cls(header["client"], header["symbols"], header["rated"], header["role"], lines)


@dataclass
class Acks:
    """The producer's acknowledged trades: ``numbers`` of its trade ids ``p<number>``."""

    symbol: str
    numbers: set[int]
    last: int  # the highest acknowledged, -1 for none

    @classmethod
    def read(cls, path: Path, symbol: str) -> Acks:
        numbers: set[int] = set()
        if path.exists():
            for line in path.read_text("utf-8").splitlines():
                batch = json.loads(line)
                numbers.update(range(batch["first"], batch["last"] + 1))
        return cls(symbol, numbers, max(numbers, default=-1))


class _ClientCheck:
    """Walks one client's log, collecting its violations."""

    def __init__(self, log: ClientLog, acks: Acks, offsets: dict[tuple[str, str, int], int]):
        self.log, self.acks, self.offsets = log, acks, offsets
        self.violations: list[str] = []
        self.epoch: str | None = None
        self.last_offset = -1
        self.reset_pending = False  # a reset seen: the next epoch may differ
        self.sequences: dict[tuple[str, str], int] = {}
        self.trade_ids: Counter[int] = Counter()
        self.after_mark: set[str] = set()
        self.marked = False
        self.ticks = self.conflated = self.resets = self.reconnects = 0

    def fail(self, text: str) -> None:
        self.violations.append(f"client {self.log.name}: {text}")

    def run(self) -> None:
        for line in self.log.lines:
            kind = line[0]
            if kind in TICK_KINDS:
                self.tick(line)
            elif kind == "reset":
                self.reset(line)
            elif kind == "open":
                self.reconnects += 1
            elif kind == "mark":
                self.marked = True
        self.reconnects = max(0, self.reconnects - 1)
        self.finish()

    def tick(self, line: list[str]) -> None:
        kind, event_id, symbol, sequence, trade_id = line
        if not event_id:
            return  # a snapshot value, not a stream position
        epoch, offset = _parse_id(event_id)
        tick = _Tick(kind, epoch, offset, symbol, int(sequence), trade_id)
        self.ticks += 1
        if self.marked:
            self.after_mark.add(symbol)
        self.position(tick)
        self.sequence(tick)
        if symbol == self.acks.symbol and kind == "trade" and trade_id.startswith("p"):
            self.trade_ids[int(trade_id[1:])] += 1

    def position(self, tick: _Tick) -> None:
        if tick.epoch != self.epoch:
            if self.epoch is not None and not self.reset_pending:
                self.fail(f"epoch {self.epoch} -> {tick.epoch} at {tick.offset} with no reset")
            self.epoch, self.last_offset = tick.epoch, -1
            self.sequences.clear()
        elif tick.offset <= self.last_offset:
            self.fail(
                f"{tick.symbol} {tick.kind} offset {tick.offset} after {self.last_offset}: "
                "repeated or out of order"
            )
        self.reset_pending = False
        self.last_offset = max(self.last_offset, tick.offset)

    def sequence(self, tick: _Tick) -> None:
        key = (tick.symbol, tick.kind)
        last = self.sequences.get(key)
        self.sequences[key] = max(tick.sequence, last or 0)
        if last is None:
            return
        if tick.sequence <= last:
            self.fail(f"{tick.symbol} {tick.kind} sequence {tick.sequence} after {last}: repeated")
        elif tick.sequence > last + 1:
            if tick.kind != "trade":
                self.conflated += tick.sequence - last - 1
                return
            missing = [
                f"offset {self.offsets.get((tick.epoch, tick.symbol, s), '?')} (sequence {s})"
                for s in range(last + 1, min(tick.sequence, last + 6))
            ]
            more = tick.sequence - last - 1 - len(missing)
            self.fail(
                f"{tick.symbol} trade missing: {', '.join(missing)}"
                + (f" and {more} more" if more > 0 else "")
                + f"; the next it got was offset {tick.offset}"
            )

    def reset(self, line: list[str]) -> None:
        _, _event_id, epoch, reason = line
        self.resets += 1
        if epoch == self.epoch:
            self.fail(f"reset ({reason}) within epoch {epoch}: history covered the outage")
        self.reset_pending = True
        self.sequences.clear()

    def finish(self) -> None:
        acks = self.acks
        if self.trade_ids:
            for number, count in self.trade_ids.items():
                if count > 1:
                    self.fail(f"{acks.symbol} producer trade p{number} delivered {count} times")
            low, high = min(self.trade_ids), max(self.trade_ids)
            lost = sorted(n for n in acks.numbers if low <= n <= high and n not in self.trade_ids)
            if lost:
                self.fail(f"{acks.symbol} acknowledged trades never delivered: p{lost[:5]}")
        if self.log.role == "left":
            return  # it left before the end: nothing to expect after
        if not self.marked:
            self.fail("never saw the end of the faults (its recording stopped early)")
            return
        quiet = sorted(set(self.log.symbols) - self.after_mark - {acks.symbol})
        if quiet:
            self.fail(f"no tick after the faults ended for {', '.join(quiet)}: stuck")
        if acks.symbol in self.log.symbols and acks.last >= 0 and acks.last not in self.trade_ids:
            self.fail(f"{acks.symbol} last acknowledged trade p{acks.last} never delivered")


def _reference_offsets(logs: list[ClientLog]) -> dict[tuple[str, str, int], int]:
    """(epoch, symbol, trade sequence) -> offset, from every client: names a tick one missed."""
    found: dict[tuple[str, str, int], int] = {}
    for log in logs:
        for line in log.lines:
            if line[0] == "trade" and line[1]:
                epoch, offset = _parse_id(line[1])
                found[(epoch, line[2], int(line[3]))] = offset
    return found


def check(run_dir: Path) -> Report:
    """Check the recordings in ``run_dir`` (layout in the module docstring)."""
    run = json.loads((run_dir / "run.json").read_text("utf-8"))
    acks = Acks.read(run_dir / "producer.jsonl", run["producer_symbol"])
    logs = [ClientLog.read(path) for path in sorted((run_dir / "clients").glob("*.jsonl"))]
    offsets = _reference_offsets(logs)
    report = Report(clients=len(logs), acknowledged=len(acks.numbers))
    for log in logs:
        report.events += len(log.lines)
        walk = _ClientCheck(log, acks, offsets)
        walk.run()
        report.ticks += walk.ticks
        if log.rated:
            report.conflated += walk.conflated
        else:
            report.conflated_unrated += walk.conflated
        report.resets += walk.resets
        report.reconnects += walk.reconnects
        report.violations.extend(walk.violations)
    return report


def main() -> int:
    report = check(Path(sys.argv[1]))
    for violation in report.violations[:50]:
        print("VIOLATION", violation)
    print(report.summary())
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
