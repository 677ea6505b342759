"""Order books for the binance source: the diff depth stream kept whole with REST snapshots.

The combined stream carries ``<sym>@depth@100ms``: every 100 ms, the levels that changed, as
update ids ``U``..``u``. A snapshot is ``GET <rest>/api/v3/depth?symbol=<SYM>&limit=<N>``:
``{"lastUpdateId", "bids", "asks"}``. :class:`~feed_service.sources.depth.DepthSync` applies
Binance's rules ("How to manage a local order book correctly"); this module decides when to ask
for a snapshot and makes the ticks:

- a symbol's first diff buffers and asks for a snapshot; so does the first diff after a chain
  break (a lost update: a reconnect, or the venue skipping), which is also reported once; a
  snapshot older than the buffered diffs is not published and another is asked for;
- every ``REFRESH_S`` each synced book is asked for again: a replica that joins a JetStream
  backbone later serves books from the last snapshot in the stream, so one is always recent;
- snapshots are paced by Binance's request weight (``WEIGHT_PER_MINUTE``), ``IN_FLIGHT`` at
  once, each symbol retried on its own backoff after a failure.

A snapshot's tick has the dedup id ``s:<lastUpdateId>``, a diff's ``d:<u>``, so a refresh of an
unchanged book, or a diff resent after a reconnect, is not stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import httpx
from tickstream.v1 import ingest_pb2, tick_pb2

from ..ingest import InvalidDraft, check_draft, make_draft
from .depth import ChainBreak, DepthSync, Diff, book_update

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per snapshot request

DEPTH_STREAM = "depth@100ms"
SNAPSHOT_PATH = "/api/v3/depth"
SNAPSHOT_TIMEOUT_S = 10.0
REFRESH_S = 300.0
IN_FLIGHT = 4  # snapshot requests at once
WEIGHT_PER_MINUTE = 5_000
"""The request weight snapshots may use a minute: Binance allows 6,000 an address, so some is
left for anything else on it (a 1,000-level snapshot weighs 50: one every 0.6 s)."""
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
    retry_after: float = 0.0  # seconds the venue asked to wait (429, 418)


def integer(data: dict[str, object], key: str) -> int:
    """``data[key]`` as a non-negative integer; MessageError otherwise."""
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise MessageError(f"{str(value)[:40]!r} in {key!r} is not an integer 0 to 2**63 - 1")
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
        self._said: dict[str, str] = {}  # why a symbol's last snapshot failed, as logged
        self._failures: dict[str, int] = {}  # failed fetches of a symbol in a row
        self.spacing_s = request_weight(limit) * 60 / WEIGHT_PER_MINUTE
        self._paused_until = 0.0  # loop time before which no fetch starts (Retry-After)
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
        """The ticks a fetched snapshot makes: itself and the buffered diffs after it; none for
        one older than the buffered diffs (another is wanted, as Binance's rules say)."""
        self._pending.discard(snapshot.symbol)
        sync = self.syncs[snapshot.symbol]
        updates = sync.on_snapshot(snapshot.last_update_id, snapshot.bids, snapshot.asks)
        if sync.stale_snapshot:
            self.want(snapshot.symbol)
        if sync.last_break is not None:
            self._on_gap(snapshot.symbol, sync.last_break, False)
        return [book_draft(snapshot.symbol, receive_ns, update) for update in updates]

    async def fetch(
        self,
        client: httpx.AsyncClient,
        url: str,
        deliver: Callable[[Snapshot], Awaitable[None]],
    ) -> None:
        """Fetch wanted snapshots, forever, starting at most one every ``spacing_s`` (Binance's
        request weight) and ``IN_FLIGHT`` at once, handing each to ``deliver``; every
        ``refresh_s`` the synced books are wanted again. A symbol whose fetch failed is fetched
        again after its own backoff, still pending (its diffs do not ask sooner); a slow or
        failing symbol holds one slot, not the others. A ``Retry-After`` pauses every fetch."""
        loop = asyncio.get_running_loop()
        refresh_at, wanted = loop.time() + self.refresh_s, self._wanted
        slots = asyncio.Semaphore(IN_FLIGHT)
        async with asyncio.TaskGroup() as fetches:
            while True:
                symbol = None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, refresh_at - loop.time())):
                        symbol = await wanted.get()
                if symbol is None:
                    for name, sync in self.syncs.items():
                        if sync.synced:
                            self.want(name)
                    refresh_at = loop.time() + self.refresh_s
                    continue
                await slots.acquire()
                fetches.create_task(self._fetch_one(client, url, symbol, deliver, slots))
                await asyncio.sleep(max(self.spacing_s, self._paused_until - loop.time()))

    async def _fetch_one(
        self,
        client: httpx.AsyncClient,
        url: str,
        symbol: str,
        deliver: Callable[[Snapshot], Awaitable[None]],
        slots: asyncio.Semaphore,
    ) -> None:
        loop, wanted = asyncio.get_running_loop(), self._wanted
        try:
            snapshot = await self._get(client, url, symbol)
        finally:
            slots.release()
        if snapshot.failure:
            failures = self._failures[symbol] = self._failures.get(symbol, 0) + 1
            delay = max(snapshot.retry_after, retry_delay(failures))
            loop.call_later(delay, wanted.put_nowait, symbol)
            self._paused_until = max(self._paused_until, loop.time() + snapshot.retry_after)
        else:
            self._failures.pop(symbol, None)
            await deliver(snapshot)

    async def _get(self, client: httpx.AsyncClient, url: str, symbol: str) -> Snapshot:
        """One snapshot, checked like any draft; a Snapshot with ``failure`` for anything
        wrong (no reply within SNAPSHOT_TIMEOUT_S in all, an HTTP error, a malformed body)."""
        params, retry_after = {"symbol": symbol, "limit": self.limit}, 0.0
        try:
            async with asyncio.timeout(SNAPSHOT_TIMEOUT_S):  # in all: a dripping reply too
                reply = await client.get(url, params=params)
            if reply.status_code != httpx.codes.OK:
                retry_after = retry_after_s(reply)
                raise MessageError(f"HTTP {reply.status_code} {reply.reason_phrase}")
            snapshot = parse_snapshot(symbol, reply.json())
            last = snapshot.last_update_id
            whole = book_update(snapshot.bids, snapshot.asks, last, last, snapshot=True)
            check_draft(0, book_draft(symbol, 0, whole))  # a crossed book, a bad decimal
            self._said.pop(symbol, None)
            return snapshot
        except TimeoutError:
            why = f"no reply within {SNAPSHOT_TIMEOUT_S:.0f} s"
        except InvalidDraft as error:
            why = str(error).split("; the batch")[0]
        except Exception as error:  # any at all: a failed snapshot is retried, never fatal
            why = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        said = self._said.get(symbol) == why  # said once per symbol and cause, not per retry
        level = logging.DEBUG if said else logging.WARNING
        log.log(level, "binance: %s depth snapshot failed: %s; retried", symbol, why)
        self._said[symbol] = why
        return Snapshot(symbol, failure=why, retry_after=retry_after)


def request_weight(limit: int) -> int:
    """Binance's request weight of a depth snapshot of ``limit`` levels a side."""
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


def retry_delay(failures: int) -> float:
    """Seconds before fetching a symbol again after its ``failures``-th failure in a row:
    1 s doubling to 30 s, drawn between half and all of it."""
    ceiling = min(30.0, 2.0 ** (min(failures, 16) - 1))
    return ceiling / 2 + random.random() * ceiling / 2


def retry_after_s(reply: httpx.Response) -> float:
    """A 429 or 418 reply's ``Retry-After`` in seconds (at most an hour), else 0."""
    if reply.status_code not in (429, 418):
        return 0.0
    try:
        return min(3600.0, max(0.0, float(reply.headers.get("Retry-After", "0"))))
    except ValueError:
        return 0.0


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
