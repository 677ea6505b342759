"""Live connector to Binance's public combined WebSocket stream (spot trades, best bid/ask and
order books).

One connection to ``<url>/stream?streams=<sym>@trade/<sym>@bookTicker/<sym>@depth@100ms/...``
carries every symbol. Messages are ``{"stream": "<sym>@<kind>", "data": {...}}`` with the
fields described in ``data/README.md``; they map to ticks exactly as the replay maps the
recorded lines (prices and sizes stay the exchange's decimal strings, ``m`` gives the side,
``T`` the event time). Depth diffs become book ticks kept whole with REST snapshots, as
``binance_depth`` describes.

A lost connection (network error, keepalive timeout, or Binance's close after 24 h) is reopened
with jittered exponential backoff; the subscription is in the URL, so reopening resubscribes.
Nothing is ever repeated: each tick carries its trade id or book update id as ``dedup_id``
(dropped by the Ingestor when already stored), and the connector itself drops any trade or
quote whose id is not above the last one it passed on for that symbol and kind (Binance ids
only increase); a depth diff the book already holds is dropped by its chain.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from tickstream.v1 import feed_pb2, ingest_pb2, tick_pb2
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from tickstream_common.symbols import is_valid_symbol

from ..ingest import InvalidDraft, check_draft, make_draft
from ..liveness import SourceHandle
from .binance_depth import (
    DEPTH_STREAM,
    MS_TO_NS,
    DepthBooks,
    DepthDiff,
    MessageError,
    Snapshot,
    diff_draft,
    integer,
    parse_diff,
    snapshot_url,
)
from .depth import ChainBreak

log = logging.getLogger(__name__)

KINDS = ("trade", "bookTicker")
SPOT_SCALE = 8
"""Binance spot formats every price and quantity of these streams with 8 decimals; the replay
of the bundled spot data reports the same scales (the most decimals seen)."""
VENUE = "binance-spot"
BINANCE_SYMBOL = re.compile(r"[A-Z0-9]{1,32}")
MAX_STREAMS = 1024  # Binance's limit per connection: two or three streams a symbol
REST_URL = "https://api.binance.com"
DEPTH = 1000  # levels a side in a book snapshot

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
STABLE_AFTER_S = 10.0  # a connection up this long resets the backoff
OPEN_TIMEOUT_S = 10.0
PING_INTERVAL_S = 20.0  # our keepalive pings; a pong missing for PING_TIMEOUT_S drops the link
PING_TIMEOUT_S = 20.0
CLOSE_TIMEOUT_S = 2.0
QUEUE_MESSAGES = 1_000  # received, not yet mapped; the reader waits beyond it (backpressure)
MAX_BATCH = 500
WARN_FIRST = 10  # malformed messages logged as warnings: the first ones, then one in WARN_EVERY
WARN_EVERY = 1_000


@dataclass(frozen=True, slots=True)
class StreamTick:
    """One mapped message: ``update_id`` is the trade id (``kind`` "trade") or the book update
    id (``kind`` "quote"), increasing per symbol and kind."""

    symbol: str
    kind: str
    update_id: int
    draft: ingest_pb2.TickDraft


class ConnectionLost(Exception):
    """The WebSocket connection ended; ``reason`` says how (for logs and ``handle.down``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def normalize_symbols(symbols: Iterable[str], kinds: tuple[str, ...] = KINDS) -> list[str]:
    """Upper-cased, de-duplicated symbols in their given order.

    Raises ValueError when none is given, one is not a Binance symbol (letters and digits,
    1 to 32) or there are more than one connection can carry (``MAX_STREAMS``, a stream per
    symbol and kind).
    """
    seen: dict[str, None] = {}
    for raw in symbols:
        symbol = raw.strip().upper()
        if not BINANCE_SYMBOL.fullmatch(symbol) or not is_valid_symbol(symbol):
            raise ValueError(f"{raw[:40]!r} is not a Binance symbol (letters and digits only)")
        seen[symbol] = None
    if not seen:
        raise ValueError("--source binance needs at least one symbol (--symbols)")
    if len(seen) * len(kinds) > MAX_STREAMS:
        raise ValueError(f"at most {MAX_STREAMS // len(kinds)} symbols on one Binance connection")
    return list(seen)


def stream_url(base: str, symbols: Iterable[str], kinds: tuple[str, ...] = KINDS) -> str:
    """The combined-stream URL for ``symbols`` and ``kinds``:
    ``<base>/stream?streams=btcusdt@trade/...``.

    Raises ValueError when ``base`` is not a ``ws://`` or ``wss://`` URL.
    """
    parts = urlsplit(base)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"--binance-url must be ws://HOST[:PORT] or wss://..., not {base!r}")
    names = [f"{symbol.lower()}@{kind}" for symbol in symbols for kind in kinds]
    return f"{base.rstrip('/')}/stream?streams={'/'.join(names)}"


def _text(data: dict[str, object], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise MessageError(f"{key!r} is {value!r}, not a string")
    return value


def _trade(symbol: str, data: dict[str, object]) -> StreamTick:
    trade_id = integer(data, "t")
    maker = data.get("m")  # the buyer was the maker: the aggressor sold
    side = tick_pb2.SIDE_UNSPECIFIED
    if maker is True:
        side = tick_pb2.SIDE_SELL
    elif maker is False:
        side = tick_pb2.SIDE_BUY
    body = tick_pb2.Trade(
        price=_text(data, "p"), size=_text(data, "q"), trade_id=str(trade_id), side=side
    )
    event_ns = integer(data, "T") * MS_TO_NS
    return StreamTick(
        symbol, "trade", trade_id, make_draft(symbol, event_ns, body, f"t:{trade_id}")
    )


def _quote(symbol: str, data: dict[str, object], receive_ns: int) -> StreamTick:
    update_id = integer(data, "u")
    body = tick_pb2.Quote(
        bid_price=_text(data, "b"),
        bid_size=_text(data, "B"),
        ask_price=_text(data, "a"),
        ask_size=_text(data, "A"),
    )
    event_ns = integer(data, "T") * MS_TO_NS if "T" in data else receive_ns
    return StreamTick(
        symbol, "quote", update_id, make_draft(symbol, event_ns, body, f"u:{update_id}")
    )


def parse_message(
    raw: str | bytes, symbols: frozenset[str], receive_ns: int
) -> StreamTick | DepthDiff:
    """Map one combined-stream message to a tick, or to a depth diff (made into book ticks by
    ``DepthBooks``).

    ``symbols`` are the subscribed symbols (upper case); ``receive_ns`` (ns since the Unix
    epoch) is the event time of a bookTicker without ``T`` (spot has none). Trades have the
    dedup id ``t:<trade id>``, quotes ``u:<update id>``. Raises MessageError for anything else
    (not JSON, another stream, a missing or mistyped field). Decimal strings are checked later
    by :func:`feed_service.ingest.check_draft`.
    """
    try:
        message = json.loads(raw)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError alike
        raise MessageError(f"not JSON: {error}") from None
    stream = message.get("stream") if isinstance(message, dict) else None
    data = message.get("data") if isinstance(message, dict) else None
    if not isinstance(stream, str) or not isinstance(data, dict):
        raise MessageError("not a combined-stream message {'stream': ..., 'data': {...}}")
    name, _, kind = stream.partition("@")
    symbol = name.upper()
    if symbol not in symbols or kind not in (*KINDS, DEPTH_STREAM):
        raise MessageError(f"stream {stream[:40]!r} was not subscribed")
    if kind == DEPTH_STREAM:
        return parse_diff(symbol, data)
    return _trade(symbol, data) if kind == "trade" else _quote(symbol, data, receive_ns)


class Backoff:
    """Jittered exponential backoff: the n-th delay is drawn uniformly from
    ``[c/2, c]`` seconds with ``c = min(cap, base * 2**n)`` ("equal jitter": never zero, never
    in step with other clients). :meth:`reset` starts again from ``base``."""

    def __init__(
        self,
        base: float = BACKOFF_BASE_S,
        cap: float = BACKOFF_CAP_S,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.base, self.cap, self._rng = base, cap, rng
        self.attempt = 0

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; each call doubles the ceiling up to cap."""
        ceiling = min(self.cap, self.base * 2 ** min(self.attempt, 32))
        self.attempt += 1
        return ceiling / 2 + self._rng() * ceiling / 2

    def reset(self) -> None:
        self.attempt = 0


Received = tuple[int, str | bytes] | tuple[int, Snapshot] | Exception
"""What a session's queue holds: a message or a snapshot with its receive time (ns since the
Unix epoch), or the ConnectionLost that ends the session."""


def _warn_if_apart(stream_url: str, rest_url: str) -> None:
    """Warn when the stream is on this machine (a local stand-in) but book snapshots would be
    asked of another host: a forgotten --binance-rest-url."""
    local = ("127.0.0.1", "::1", "localhost")
    stream_host, rest_host = urlsplit(stream_url).hostname, urlsplit(rest_url).hostname
    if stream_host in local and rest_host not in local:
        log.warning(
            "binance: the stream is local (%s) but book snapshots come from %s; "
            "set --binance-rest-url, or --binance-depth 0 for no books",
            stream_url,
            rest_url,
        )


def _report_crash(task: asyncio.Task[None]) -> None:
    """Log a helper task that ended by an error (not by cancellation): never silently."""
    if not task.cancelled() and task.exception() is not None:
        log.error("binance: %s failed: %r", task.get_name(), task.exception())


async def _pump(ws: ClientConnection, queue: asyncio.Queue[Received]) -> None:
    """Move received messages, stamped with their receive time, into ``queue``; end with a
    ConnectionLost saying why the connection ended."""
    try:
        async for raw in ws:
            await queue.put((time.time_ns(), raw))
        reason = f"closed by the server (code {ws.close_code}, {ws.close_reason or 'no reason'})"
    except WebSocketException as error:  # ConnectionClosedError: no close frame, ping timeout
        reason = f"connection lost: {error}"
    except Exception as error:  # never leave the consumer waiting on an empty queue
        log.exception("binance: reader failed")
        reason = f"reader failed: {error!r}"
    await queue.put(ConnectionLost(reason))


class BinanceSource:
    """Trades, best bid/ask and (``depth`` > 0) order books of ``symbols`` from Binance's
    combined stream at ``url``, with book snapshots from the REST API at ``rest_url``.

    ``load`` validates the symbols and URL (ValueError) and declares each symbol with
    Binance spot's scales; ``batches`` connects, yields each message's ticks as soon as they
    are read (several when they arrived together, at most ``MAX_BATCH`` messages), and
    reconnects forever with :class:`Backoff`, reporting ``handle.connected()`` /
    ``handle.down(reason)``. ``on_book_gap`` is called once per break of a book's update chain.
    """

    name = "binance"

    def __init__(
        self,
        symbols: list[str],
        url: str,
        *,
        rest_url: str = REST_URL,
        depth: int = DEPTH,
        on_book_gap: Callable[[], None] = lambda: None,
        backoff: Backoff | None = None,
        stable_after: float = STABLE_AFTER_S,
    ) -> None:
        self._raw_symbols = symbols
        self._base_url, self._rest_url, self._depth = url, rest_url, depth
        self._on_book_gap = on_book_gap
        self._backoff = backoff or Backoff()
        self._stable_after = stable_after
        self.kinds = (*KINDS, DEPTH_STREAM) if depth else KINDS
        self.symbols: frozenset[str] = frozenset()
        self.url = ""
        self.books: DepthBooks | None = None
        self._last_ids: dict[tuple[str, str], int] = {}
        self.repeats = 0  # messages dropped as already passed on (resent after a reconnect)
        self.malformed = 0
        self.book_gaps = 0

    async def load(self) -> list[feed_pb2.SymbolInfo]:
        symbols = normalize_symbols(self._raw_symbols, self.kinds)
        self.url = stream_url(self._base_url, symbols, self.kinds)
        self.symbols = frozenset(symbols)
        if self._depth:
            self.books = DepthBooks(symbols, self._depth, self._book_gap)
            _warn_if_apart(self._base_url, self._rest_url)
        log.info("binance: %d symbols from %s", len(symbols), self._base_url)
        return [
            feed_pb2.SymbolInfo(
                symbol=symbol,
                price_scale=SPOT_SCALE,
                size_scale=SPOT_SCALE,
                source=f"{self.name}:{VENUE}",
            )
            for symbol in sorted(symbols)
        ]

    async def batches(self, handle: SourceHandle) -> AsyncIterator[list[ingest_pb2.TickDraft]]:
        clock = asyncio.get_running_loop().time
        host = urlsplit(self.url).netloc
        async with httpx.AsyncClient() as rest:
            while True:
                opened_at: float | None = None
                try:
                    async with connect(
                        self.url,
                        open_timeout=OPEN_TIMEOUT_S,
                        ping_interval=PING_INTERVAL_S,
                        ping_timeout=PING_TIMEOUT_S,
                        close_timeout=CLOSE_TIMEOUT_S,
                    ) as ws:
                        opened_at = clock()
                        handle.connected(f"connected to {host}")
                        streams = len(self.symbols) * len(self.kinds)
                        log.info("binance: connected to %s, %d streams", host, streams)
                        async for drafts in self._session(ws, rest):
                            yield drafts
                except ConnectionLost as lost:
                    reason = lost.reason
                except (OSError, TimeoutError, WebSocketException) as error:
                    failed = "cannot connect to" if opened_at is None else "connection failed to"
                    reason = f"{failed} {host}: {error!r}"
                up_for = clock() - opened_at if opened_at is not None else 0.0
                await self._wait_to_reconnect(handle, reason, up_for)

    async def _wait_to_reconnect(self, handle: SourceHandle, reason: str, up_for: float) -> None:
        if up_for >= self._stable_after:
            self._backoff.reset()
        delay = self._backoff.next_delay()
        handle.down(f"{reason}; reconnecting in {delay:.1f} s")
        log.warning(
            "binance: %s (up %.1f s); reconnecting in %.1f s; %d resent messages dropped",
            reason,
            up_for,
            delay,
            self.repeats,
        )
        await asyncio.sleep(delay)

    async def _session(
        self, ws: ClientConnection, rest: httpx.AsyncClient
    ) -> AsyncIterator[list[ingest_pb2.TickDraft]]:
        """Batches of one connection; raises ConnectionLost when it ends. Book snapshots are
        fetched beside it and reach the same queue, so one consumer applies every update."""
        queue: asyncio.Queue[Received] = asyncio.Queue(QUEUE_MESSAGES)
        helpers = [asyncio.create_task(_pump(ws, queue), name="binance-reader")]
        if self.books is not None:
            self.books.restart()

            async def deliver(snapshot: Snapshot) -> None:
                await queue.put((time.time_ns(), snapshot))

            fetch = self.books.fetch(rest, snapshot_url(self._rest_url), deliver)
            helpers.append(asyncio.create_task(fetch, name="binance-snapshots"))
            helpers[-1].add_done_callback(_report_crash)
        try:
            while True:
                items = [await queue.get()]
                while len(items) < MAX_BATCH and not queue.empty():
                    items.append(queue.get_nowait())
                drafts: list[ingest_pb2.TickDraft] = []
                for item in items:
                    if isinstance(item, Exception):
                        if drafts:
                            yield drafts
                        raise item
                    drafts.extend(self.take(item[1], item[0]))
                if drafts:
                    yield drafts
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    def take(self, item: str | bytes | Snapshot, receive_ns: int) -> list[ingest_pb2.TickDraft]:
        """The drafts of one received message or fetched snapshot (see :meth:`accept`)."""
        if isinstance(item, Snapshot):
            assert self.books is not None
            return self.books.on_snapshot(item, receive_ns)
        return self.accept(item, receive_ns)

    def accept(self, raw: str | bytes, receive_ns: int) -> list[ingest_pb2.TickDraft]:
        """The drafts one received message makes: none (counted, logged) for a malformed one
        or one whose id is not above the last passed on for its symbol and kind; for a depth
        diff, what the book's chain allows (see ``DepthBooks.on_diff``)."""
        try:
            tick = parse_message(raw, self.symbols, receive_ns)
            if isinstance(tick, DepthDiff) and self.books is None:
                raise MessageError("a depth stream was not subscribed")
            # a diff is checked before its book takes it, published now or after a snapshot
            check_draft(0, diff_draft(tick) if isinstance(tick, DepthDiff) else tick.draft)
        except (MessageError, InvalidDraft, ValueError, ArithmeticError, RecursionError) as error:
            # ValueError: a time outside protobuf's range, an unpaired surrogate (UnicodeError)
            self.malformed += 1
            level = logging.WARNING
            if self.malformed > WARN_FIRST and self.malformed % WARN_EVERY:
                level = logging.DEBUG
            log.log(level, "binance: message skipped (%d so far): %s", self.malformed, error)
            return []
        if isinstance(tick, DepthDiff):
            assert self.books is not None
            return self.books.on_diff(tick)
        key = (tick.symbol, tick.kind)
        if tick.update_id <= self._last_ids.get(key, -1):
            self.repeats += 1
            return []
        self._last_ids[key] = tick.update_id
        return [tick.draft]

    def _book_gap(self, symbol: str, gap: ChainBreak, reconnected: bool) -> None:
        """Count a break; said at INFO when it is the reconnect's (every book has one)."""
        self.book_gaps += 1
        self._on_book_gap()
        log.log(
            logging.INFO if reconnected else logging.WARNING,
            "binance: %s book: %s%s; not published until the next depth snapshot",
            symbol,
            gap.describe(),
            " after the reconnect" if reconnected else "",
        )
