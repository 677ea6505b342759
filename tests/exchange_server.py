"""A local stand-in for Binance's combined-stream WebSocket endpoint, for tests.

:class:`ExchangeServer` is a real ``websockets`` server on ``127.0.0.1`` (a free port) running
in a thread of its own, so sync and async tests, and feed processes, can all connect to
``server.url``. A client opens ``/stream?streams=btcusdt@trade/btcusdt@bookTicker/...``, as it
would at Binance, and receives the recorded messages of those streams (``data/binance``; the
recorded JSON already is the ``{"stream": ..., "data": ...}`` framing), in recorded order, as
fast as the socket takes them or at ``rate`` messages per second.

It also answers Binance's REST depth snapshot, ``GET /api/v3/depth?symbol=BTCUSDT&limit=N``,
from a book it keeps as it sends: the recorded REST snapshot of each file (``snapshots``) with
every depth diff sent since applied, so a snapshot is always as current as the stream.

Faults, for reconnect tests:
- ``drops`` times, after ``drop_every`` messages on one connection, the server drops the TCP
  connection without a WebSocket close frame (what a network failure looks like). The next
  connection resumes ``rewind`` messages before the drop point, so a connector that does not
  deduplicate repeats ticks; none is skipped. With ``lose`` instead, the next connection
  starts ``lose`` messages after the drop point: those are lost, as in a real outage (their
  depth diffs still change the book the snapshots show).
- :meth:`pause` stops sending without closing the connection (keepalive pings are still
  answered); :meth:`resume` continues where it stopped.

The stream position is shared by all connections: the server models one client at a time with
one stream set. After the last message the connection stays open and idle.
"""

from __future__ import annotations

import asyncio
import gzip
import heapq
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

YIELD_EVERY = 64  # messages sent between two yields to the server's loop when unpaced


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """One recorded stream message: ``stream`` (e.g. ``btcusdt@trade``) and its JSON text."""

    receive_ns: int
    stream: str
    text: str


def _read_file(path: Path) -> Iterator[StreamMessage]:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            stamp, _, text = line.rstrip("\n").partition(" ")
            stream = json.loads(text).get("stream")
            if isinstance(stream, str):  # the REST snapshot line has none
                yield StreamMessage(int(stamp), stream, text)


def recorded_messages(files: Iterable[Path], limit: int) -> list[StreamMessage]:
    """The first ``limit`` stream messages (trades, bookTicker, depth) of the recorded
    ``files`` merged in receive-time order."""
    merged = heapq.merge(*(_read_file(path) for path in files), key=lambda m: m.receive_ns)
    out: list[StreamMessage] = []
    for message in merged:
        if len(out) >= limit:
            break
        out.append(message)
    return out


def recorded_snapshots(files: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """Each file's REST depth snapshot (``lastUpdateId``, ``bids``, ``asks``), by the symbol
    of the file's depth stream (the snapshot names none)."""
    out: dict[str, dict[str, Any]] = {}
    for path in files:
        snapshot, symbol = None, None
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                message = json.loads(line.partition(" ")[2])
                if "lastUpdateId" in message:
                    snapshot = message
                elif str(message.get("stream", "")).endswith("@depth@100ms"):
                    symbol = message["data"]["s"]
                if snapshot is not None and symbol is not None:
                    out[symbol] = snapshot
                    break
    return out


@dataclass
class Book:
    """One symbol's book as the exchange has it: levels by price, and the last update id."""

    last_id: int
    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, snapshot: dict[str, Any]) -> Book:
        return cls(snapshot["lastUpdateId"], dict(snapshot["bids"]), dict(snapshot["asks"]))

    def apply(self, data: dict[str, Any]) -> None:
        """A depthUpdate; one the book already holds is ignored."""
        if data["u"] <= self.last_id:
            return
        for side, changes in ((self.bids, data["b"]), (self.asks, data["a"])):
            for price, size in changes:
                if Decimal(size) == 0:
                    side.pop(price, None)
                else:
                    side[price] = size
        self.last_id = data["u"]

    def top(self, limit: int) -> dict[str, Any]:
        """The REST snapshot's JSON: ``limit`` levels a side, best first."""
        bids = sorted(self.bids.items(), key=lambda level: -Decimal(level[0]))[:limit]
        asks = sorted(self.asks.items(), key=lambda level: Decimal(level[0]))[:limit]
        return {"lastUpdateId": self.last_id, "bids": bids, "asks": asks}


def requested_streams(path: str) -> set[str]:
    """The stream names of ``/stream?streams=a/b/c`` (empty for anything else)."""
    parts = urlsplit(path)
    if parts.path.rstrip("/") != "/stream":
        return set()
    names = parse_qs(parts.query).get("streams", [""])[0]
    return {name for name in names.split("/") if name}


class ExchangeServer:
    """Serves ``messages`` in Binance's combined-stream framing (see the module docstring).

    Use as a context manager (or :meth:`start` / :meth:`stop`). Readable from the test's
    thread: ``url``, ``rest_url``, ``connections`` (accepted so far), ``paths`` (request
    paths), ``position`` (index of the next message to send), ``sent`` (messages sent in all,
    resends included), ``drops_done``, ``books`` and ``snapshot_requests`` (their symbols).
    """

    def __init__(
        self,
        messages: list[StreamMessage],
        *,
        drop_every: int = 0,
        drops: int = 0,
        rewind: int = 50,
        lose: int = 0,
        rate: float = 0.0,
        snapshots: dict[str, dict[str, Any]] | None = None,
        hang: frozenset[str] = frozenset(),
    ) -> None:
        self.messages = messages
        self.drop_every, self.drops, self.rewind, self.rate = drop_every, drops, rewind, rate
        self.lose = lose
        self.books = {symbol: Book.of(s) for symbol, s in (snapshots or {}).items()}
        self.snapshot_requests: list[str] = []
        self.hang = hang  # symbols whose snapshot request is never answered
        self.port = 0
        self.connections = 0
        self.paths: list[str] = []
        self.position = 0
        self.sent = 0
        self.drops_done = 0
        self._finished = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._running: asyncio.Event | None = None

    @property
    def url(self) -> str:
        """The base URL to give a connector, e.g. ``ws://127.0.0.1:43211``."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        """The REST base URL (``--binance-rest-url``), e.g. ``http://127.0.0.1:43211``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ExchangeServer:
        """Bind and serve in a daemon thread; returns once the port is known."""
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("exchange server did not start")
        return self

    def stop(self) -> None:
        """Close every connection and the listening socket; wait for the thread (5 s)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> ExchangeServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def pause(self) -> None:
        """Stop sending (the connection stays open); takes effect before the next message."""
        self._call(lambda running: running.clear())

    def resume(self) -> None:
        """Continue sending after :meth:`pause`."""
        self._call(lambda running: running.set())

    def wait_finished(self, timeout: float) -> bool:
        """True once the last message was sent (within ``timeout`` seconds), else False."""
        return self._finished.wait(timeout)

    def _call(self, action: Callable[[asyncio.Event], None]) -> None:
        assert self._loop is not None and self._running is not None, "server not started"
        running = self._running

        async def apply() -> None:
            action(running)

        asyncio.run_coroutine_threadsafe(apply(), self._loop).result(5)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop, self._running = asyncio.Event(), asyncio.Event()
        self._running.set()
        serving = serve(self._handle, "127.0.0.1", 0, close_timeout=1, process_request=self._rest)
        async with serving as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    async def _rest(self, connection: ServerConnection, request: Request) -> Response | None:
        """``GET /api/v3/depth?symbol=S&limit=N``: the book's top N levels (404 for a symbol
        without one; no answer for a minute for one in ``hang``); any other path goes on to the
        WebSocket handshake."""
        parts = urlsplit(request.path)
        if parts.path != "/api/v3/depth":
            return None
        query = parse_qs(parts.query)
        symbol = query.get("symbol", [""])[0]
        self.snapshot_requests.append(symbol)
        if symbol in self.hang:
            await asyncio.sleep(60)
        book = self.books.get(symbol)
        if book is None:
            return connection.respond(HTTPStatus.NOT_FOUND, '{"msg": "Invalid symbol."}')
        limit = int(query.get("limit", ["100"])[0])
        response = connection.respond(HTTPStatus.OK, json.dumps(book.top(limit)))
        response.headers["Content-Type"] = "application/json"
        return response

    def _sent(self, message: StreamMessage) -> None:
        """Keep the book of a depth diff sent (or lost in an outage)."""
        if message.stream.endswith("@depth@100ms"):
            data = json.loads(message.text)["data"]
            book = self.books.get(data["s"])
            if book is not None:
                book.apply(data)

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        path = ws.request.path if ws.request is not None else ""
        self.paths.append(path)
        streams = requested_streams(path)
        if not streams:
            await ws.close(1008, "expected /stream?streams=...")
            return
        selected = [m for m in self.messages if m.stream in streams]
        sent_here = 0
        clock = asyncio.get_running_loop().time
        started, paced = clock(), 0
        while self.position < len(selected):
            assert self._running is not None
            if not self._running.is_set():  # paused: wait, then pace from now on
                await self._running.wait()
                started, paced = clock(), sent_here
            await ws.send(selected[self.position].text)
            self._sent(selected[self.position])
            self.position += 1
            self.sent += 1
            sent_here += 1
            if self.drops_done < self.drops and sent_here >= self.drop_every > 0:
                await self._drop(ws, selected)
                return
            ahead = started + (sent_here - paced) / self.rate - clock() if self.rate > 0 else 0.0
            if ahead > 0:
                await asyncio.sleep(ahead)
            elif sent_here % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        self._finished.set()
        await ws.wait_closed()

    async def _drop(self, ws: ServerConnection, selected: list[StreamMessage]) -> None:
        """End the TCP connection without a WebSocket close frame (the transport writes what
        it buffered, then FIN); the next connection starts ``rewind`` messages earlier, or
        ``lose`` messages later."""
        self.drops_done += 1
        if self.lose:
            for message in selected[self.position : self.position + self.lose]:
                self._sent(message)
            self.position = min(len(selected), self.position + self.lose)
        else:
            self.position = max(0, self.position - self.rewind)
        ws.transport.close()
        await ws.wait_closed()
