"""The chaos run's SSE clients: each records what it saw (for ``chaos.checker``), reconnecting
with its Last-Event-ID to whichever edge is up, as an EventSource behind a load balancer does.

A client's recording is kept in memory and written once at the end (``Client.dump``), in the
layout ``chaos/checker.py`` describes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx

TICK_KINDS = frozenset({"trade", "quote", "book"})
STARTED = time.monotonic()  # "open" and "end" lines carry seconds since this
RECONNECT_S = (0.2, 0.6)  # a reconnect waits a random time in this range


@dataclass
class Client:
    """One SSE client of ``symbols`` (``types``; ``max_rate`` when rated; ``start`` a first
    cursor such as ``earliest``)."""

    name: str
    symbols: list[str]
    types: str
    role: str = "live"  # live, earliest, left (leaves before the end), stalled (never reads)
    max_rate: float | None = None
    start: str | None = None
    lines: list[list[str]] = field(default_factory=list)
    last_id: str | None = None
    cut: asyncio.Event = field(default_factory=asyncio.Event)  # set: drop the connection now
    # Kept as events arrive, so the run's wait at the end never rescans ``lines``:
    since_mark: set[str] | None = None  # symbols with a tick after the mark (None: no mark yet)
    awaited: str = ""  # a trade id the run waits for (see await_trade)
    got_awaited: bool = False
    offset: int = 0  # of the last tick received

    def url(self, edge: str) -> str:
        query = {"symbols": ",".join(self.symbols), "types": self.types}
        if "book" in self.types:
            query["depth"] = "5"
        if self.max_rate is not None:
            query["max_rate"] = str(self.max_rate)
        if self.last_id is None and self.start is not None:
            query["last_event_id"] = self.start
        return f"{edge}/sse?{urlencode(query)}"

    def record(self, block: bytes) -> None:
        """Take one SSE event block (its lines, without the blank line)."""
        kind, data, event_id = "message", b"", None
        for line in block.split(b"\n"):
            name, _, value = line.partition(b":")
            value = value.removeprefix(b" ")
            if name == b"event":
                kind = value.decode()
            elif name == b"data":
                data = value
            elif name == b"id":
                event_id = value.decode()
        if event_id:
            self.last_id = event_id
        if kind in TICK_KINDS:
            tick = json.loads(data)
            trade_id = tick.get("trade", {}).get("tradeId", "") if kind == "trade" else ""
            self.lines.append([kind, event_id or "", tick["symbol"], tick["sequence"], trade_id])
            if event_id:
                self.offset = int(event_id.rpartition("-")[2])
            if self.since_mark is not None:
                self.since_mark.add(tick["symbol"])
                self.got_awaited = self.got_awaited or (trade_id != "" and trade_id == self.awaited)
        elif kind == "reset":
            info = json.loads(data)
            self.lines.append(["reset", event_id or "", info["epoch"], info["reason"]])
        elif kind == "disconnect":
            self.lines.append(["disconnect", json.loads(data).get("reason", "")])

    async def read(self, http: httpx.AsyncClient, edge: str) -> None:
        """One connection: record its events until it ends or is ``cut``."""
        headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
        self.lines.append(["open", edge, self.last_id or "", round(time.monotonic() - STARTED, 2)])
        async with http.stream("GET", self.url(edge), headers=headers) as response:
            if response.status_code != 200:
                self.lines.append(["end", f"HTTP {response.status_code}"])
                return
            buffer = b""
            async for chunk in response.aiter_raw():
                buffer += chunk
                *blocks, buffer = buffer.split(b"\n\n")
                for block in blocks:
                    if block and not block.startswith(b":"):
                        self.record(block)

    async def run(self, http: httpx.AsyncClient, edges: list[str], stop: asyncio.Event) -> None:
        """Connect, read, reconnect (to a random edge) until ``stop``."""
        rng = random.Random(self.name)
        while not stop.is_set():
            self.cut.clear()
            reading = asyncio.ensure_future(self.read(http, rng.choice(edges)))
            cutting = asyncio.ensure_future(self.cut.wait())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({reading, cutting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            for task in (reading, cutting, stopping):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError, OSError):
                await reading
            if reading.cancelled():
                why = "stopped" if stop.is_set() else "cut"
            else:
                error = reading.exception()
                why = "closed" if error is None else type(error).__name__
            self.lines.append(["end", why, round(time.monotonic() - STARTED, 2)])
            if self.role == "left" and self.cut.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), rng.uniform(*RECONNECT_S))

    def mark(self) -> None:
        """The faults are over: from here on, note which symbols deliver."""
        self.lines.append(["mark"])
        self.since_mark = set()

    def await_trade(self, trade_id: str) -> None:
        """Watch for the trade ``trade_id``, counting one already received."""
        self.awaited = trade_id
        self.got_awaited = any(line[0] == "trade" and line[4] == trade_id for line in self.lines)

    def dump(self, directory: Path) -> None:
        header = {"client": self.name, "symbols": self.symbols, "rated": self.max_rate is not None}
        header["role"] = self.role
        with (directory / f"{self.name}.jsonl").open("w", encoding="utf-8") as out:
            out.write(json.dumps(header) + "\n")
            for line in self.lines:
                out.write(json.dumps(line) + "\n")


async def stall(edge: str, symbols: list[str], stop: asyncio.Event) -> None:
    """A client that sends its request and never reads a byte of the answer, until ``stop``."""
    host, _, port = edge.removeprefix("http://").partition(":")
    with contextlib.suppress(OSError):
        _reader, writer = await asyncio.open_connection(host, int(port))
        query = urlencode({"symbols": ",".join(symbols)})
        writer.write(f"GET /sse?{query} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        await stop.wait()
        writer.close()


def make_clients(count: int, symbols: list[str], rng: random.Random) -> list[Client]:
    """``count`` clients: single- and multi-symbol, some rated, some from ``earliest``, some
    leaving early; trades for all, quotes for half, books for a fifth."""
    clients = []
    for index in range(count):
        roll = rng.random()
        chosen = rng.sample(symbols, 1 if roll < 0.4 else rng.randint(2, len(symbols)))
        kinds = rng.random()  # quotes are most of the volume: half the clients take trades only
        types = "trade" if kinds < 0.5 else "trade,quote" if kinds < 0.8 else "trade,quote,book"
        client = Client(f"c{index:03d}", sorted(chosen), types)
        if 0.4 <= roll < 0.55:
            client.max_rate = 2.0
        elif 0.55 <= roll < 0.65:
            client.role, client.start = "earliest", "earliest"
        elif 0.65 <= roll < 0.7:
            client.role = "left"
        clients.append(client)
    return clients
