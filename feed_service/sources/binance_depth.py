"""Order books for the binance source: the diff depth stream kept whole with REST snapshots.

The combined stream carries ``<sym>@depth@100ms``: every 100 ms, the levels that changed, as
update ids ``U``..``u``. A snapshot is ``GET <rest>/api/v3/depth?symbol=<SYM>&limit=<N>``:
``{"lastUpdateId", "bids", "asks"}``. :class:`~feed_service.sources.depth.DepthSync` applies
Binance's rules ("How to manage a local order book correctly"); this module decides when to ask
for a snapshot and makes the ticks:

- a symbol's first diff buffers and asks for a snapshot (so the snapshot is never older than
  the buffered diffs' start, as the rules want); so does the first diff after a chain break
  (a lost update: a reconnect, or the venue skipping), which is also reported once;
- every ``REFRESH_S`` each synced book is asked for again: a replica that joins a JetStream
  backbone later serves books from the last snapshot in the stream, so one is always recent;
- snapshots are fetched one at a time, with backoff after a failure: Binance weighs a
  1,000-level snapshot 50 of the 6,000 a minute one address may use.

A snapshot's tick has the dedup id ``s:<lastUpdateId>``, a diff's ``d:<u>``, so a refresh of an
unchanged book, or a diff resent after a reconnect, is not stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import httpx
from tickstream.v1 import ingest_pb2, tick_pb2

from ..ingest import InvalidDraft, check_draft, make_draft
from .depth import ChainBreak, DepthSync, Diff, book_update

log = logging.getLogger(__name__)

DEPTH_STREAM = "depth@100ms"
SNAPSHOT_PATH = "/api/v3/depth"
SNAPSHOT_TIMEOUT_S = 10.0
REFRESH_S = 300.0
MS_TO_NS = 1_000_000


class MessageError(ValueError):
    """A received message (or snapshot) is not what Binance documents."""


@dataclass(frozen=True, slots=True)
class DepthDiff:
    """One ``depthUpdate`` of ``symbol``; ``event_ns`` from its ``E`` (ms)."""

    symbol: str
    diff: Diff
    event_ns: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A REST snapshot of ``symbol``'s book, or why it could not be had (``failure``)."""

    symbol: str
    last_update_id: int = 0
    bids: Sequence[Sequence[str]] = ()
    asks: Sequence[Sequence[str]] = ()
    failure: str = ""


def integer(data: dict[str, object], key: str) -> int:
    """``data[key]`` as a non-negative integer; MessageError otherwise."""
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MessageError(f"{key!r} is {value!r}, not a non-negative integer")
    return value


def levels(data: dict[str, object], key: str) -> list[list[str]]:
    """``data[key]`` as ``[[price, size], ...]`` strings; MessageError otherwise (the decimals
    themselves are checked with the draft)."""
    value = data.get(key)
    if not isinstance(value, list):
        raise MessageError(f"{key!r} is not a list of [price, size]")
    for level in value:
        pair = isinstance(level, list) and len(level) == 2
        if not pair or not all(isinstance(x, str) for x in level):
            raise MessageError(f"{key!r} holds {str(level)[:40]}, not [price, size] strings")
    return value


def parse_diff(symbol: str, data: dict[str, object]) -> DepthDiff:
    """A ``depthUpdate`` payload; MessageError for a missing or mistyped field."""
    first, last = integer(data, "U"), integer(data, "u")
    if first > last:
        raise MessageError(f"'U' {first} is above 'u' {last}")
    diff = Diff(first, last, levels(data, "b"), levels(data, "a"))
    return DepthDiff(symbol, diff, integer(data, "E") * MS_TO_NS)


def parse_snapshot(symbol: str, body: object) -> Snapshot:
    """A REST snapshot's JSON; MessageError when it is not ``{"lastUpdateId", "bids", "asks"}``."""
    if not isinstance(body, dict):
        raise MessageError("not a JSON object")
    last = integer(body, "lastUpdateId")
    return Snapshot(symbol, last, levels(body, "bids"), levels(body, "asks"))


def snapshot_url(base: str) -> str:
    """The snapshot endpoint under ``base`` (``https://HOST[:PORT]``)."""
    return base.rstrip("/") + SNAPSHOT_PATH


class DepthBooks:
    """Each symbol's :class:`DepthSync`, the snapshots wanted, and the ticks they make.

    Feed it :meth:`on_diff` and :meth:`on_snapshot` in arrival order (one consumer); run
    :meth:`fetch` beside it to turn wanted snapshots into :class:`Snapshot` items.
    ``on_gap(symbol, gap, reconnected)`` is called once per chain break; ``reconnected``: at
    the first diff after a reconnect (Binance does not resend: expected, not a fault)."""

    def __init__(
        self,
        symbols: Iterable[str],
        limit: int,
        on_gap: Callable[[str, ChainBreak, bool], None],
        refresh_s: float = REFRESH_S,
    ) -> None:
        self.syncs = {symbol: DepthSync() for symbol in symbols}
        self.limit, self.refresh_s, self._on_gap = limit, refresh_s, on_gap
        self._wanted: asyncio.Queue[str] = asyncio.Queue()
        self._pending: set[str] = set()  # wanted or being fetched
        self._failing: dict[str, str] = {}  # why a symbol's last snapshot failed
        self._reconnected: set[str] = set()  # no diff yet since the connection was made again

    def restart(self) -> None:
        """Forget the snapshots asked for (a new connection: a fetch in flight was cancelled);
        a book not in sync asks again with its next diff."""
        self._wanted = asyncio.Queue()
        self._pending.clear()
        self._reconnected = {symbol for symbol, sync in self.syncs.items() if sync.synced}

    def want(self, symbol: str) -> None:
        """Ask for a snapshot of ``symbol`` unless one is already on its way."""
        if symbol not in self._pending:
            self._pending.add(symbol)
            self._wanted.put_nowait(symbol)

    def on_diff(self, message: DepthDiff) -> list[ingest_pb2.TickDraft]:
        """The ticks a diff makes: itself when it continues the book, else none (buffered
        until a snapshot, which is then wanted)."""
        sync = self.syncs[message.symbol]
        updates = sync.on_diff(message.diff)
        reconnected = message.symbol in self._reconnected
        self._reconnected.discard(message.symbol)
        if sync.last_break is not None:
            self._on_gap(message.symbol, sync.last_break, reconnected)
        if not sync.synced:
            self.want(message.symbol)
        return [book_draft(message.symbol, message.event_ns, update) for update in updates]

    def on_snapshot(self, snapshot: Snapshot, receive_ns: int) -> list[ingest_pb2.TickDraft]:
        """The ticks a fetched snapshot makes: itself and the buffered diffs after it."""
        self._pending.discard(snapshot.symbol)
        if snapshot.failure:
            return []
        sync = self.syncs[snapshot.symbol]
        updates = sync.on_snapshot(snapshot.last_update_id, snapshot.bids, snapshot.asks)
        if sync.last_break is not None:
            self._on_gap(snapshot.symbol, sync.last_break, False)
        return [book_draft(snapshot.symbol, receive_ns, update) for update in updates]

    async def fetch(
        self,
        client: httpx.AsyncClient,
        url: str,
        deliver: Callable[[Snapshot], Awaitable[None]],
        backoff: Callable[[bool], float],
    ) -> None:
        """Fetch wanted snapshots one at a time, forever, handing each to ``deliver``; every
        ``refresh_s`` the synced books are wanted again. ``backoff(failed)`` is the pause
        after a fetch (0 after a success)."""
        clock = asyncio.get_running_loop().time
        refresh_at = clock() + self.refresh_s
        while True:
            symbol = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, refresh_at - clock())):
                    symbol = await self._wanted.get()
            if symbol is None:
                for name, sync in self.syncs.items():
                    if sync.synced:
                        self.want(name)
                refresh_at = clock() + self.refresh_s
                continue
            snapshot = await self._get(client, url, symbol)
            await deliver(snapshot)
            await asyncio.sleep(backoff(bool(snapshot.failure)))

    async def _get(self, client: httpx.AsyncClient, url: str, symbol: str) -> Snapshot:
        params = {"symbol": symbol, "limit": self.limit}
        try:
            reply = await client.get(url, params=params, timeout=SNAPSHOT_TIMEOUT_S)
            reply.raise_for_status()
            snapshot = parse_snapshot(symbol, reply.json())
            whole = book_update(snapshot.bids, snapshot.asks, 0, 0, snapshot=True)
            check_draft(0, book_draft(symbol, 0, whole))  # a crossed book, a bad decimal
            self._failing.pop(symbol, None)
            return snapshot
        except (httpx.HTTPError, ValueError, InvalidDraft) as error:  # ValueError: bad JSON
            why = str(error)[:200] or type(error).__name__
        except Exception as error:  # anything else must not stop the books either: retried
            log.exception("binance: %s depth snapshot failed unexpectedly", symbol)
            why = repr(error)[:200]
        said = self._failing.get(symbol) == why  # said once per symbol and cause, not per retry
        log.log(
            logging.DEBUG if said else logging.WARNING,
            "binance: %s depth snapshot failed: %s",
            symbol,
            why,
        )
        self._failing[symbol] = why
        return Snapshot(symbol, failure=why)


def book_draft(symbol: str, event_ns: int, update: tick_pb2.BookUpdate) -> ingest_pb2.TickDraft:
    """The draft of a book update, with its dedup id (``s:<id>`` or ``d:<id>``)."""
    dedup = f"s:{update.last_update_id}" if update.snapshot else f"d:{update.last_update_id}"
    return make_draft(symbol, event_ns, update, dedup)


def diff_draft(message: DepthDiff) -> ingest_pb2.TickDraft:
    """The draft a diff would make (to check its levels before its book takes it)."""
    diff = message.diff
    return book_draft(
        message.symbol, message.event_ns, book_update(diff.bids, diff.asks, diff.first, diff.last)
    )
