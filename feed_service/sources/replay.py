"""Replay of recorded Binance market data (trades, best bid/ask and L2 books) at its pacing.

Input format (``data/README.md``): one line per message, ``<receive time ns> <JSON>``, where the
JSON is ``{"stream": "<sym>@trade" | "<sym>@bookTicker" | "<sym>@depth@100ms" | ...,
"data": {...}}`` or, near the top of a file, a REST depth snapshot (``lastUpdateId``, ``bids``,
``asks``: the file's symbol). Books are built by Binance's rules (:mod:`.depth`). Prices and
quantities stay the decimal strings recorded.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from tickstream.v1 import feed_pb2, ingest_pb2, tick_pb2

from tickstream_common.symbols import is_valid_symbol

from ..ingest import make_draft
from ..liveness import SourceHandle
from .depth import ChainBreak, DepthSync, Diff

log = logging.getLogger(__name__)

PERPETUAL_SUFFIX = "-PERP"
FAST_BATCH = 2_000
MS_TO_NS = 1_000_000


class ReplayError(Exception):
    """A replay path is missing, empty, or holds no trades or quotes."""


Body = tick_pb2.Trade | tick_pb2.Quote | tick_pb2.BookUpdate


@dataclass(frozen=True, slots=True)
class RecordedTick:
    """One parsed tick: ``receive_ns`` paces the replay; the rest becomes its ``TickDraft``."""

    receive_ns: int
    symbol: str
    event_time_ns: int
    body: Body

    def draft(self, shift_ns: int = 0) -> ingest_pb2.TickDraft:
        """The tick to publish, its event time moved ``shift_ns`` later (a looped lap)."""
        return make_draft(self.symbol, self.event_time_ns + shift_ns, self.body)


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files named directly, plus every ``*.gz``/``*.txt``/``*.jsonl`` below named folders.

    Raises ReplayError for a path that does not exist or a folder with no such files.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix in {".gz", ".txt", ".jsonl"}
            )
            if not found:
                raise ReplayError(f"no recorded files (*.gz, *.txt, *.jsonl) under {path}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ReplayError(f"replay path does not exist: {path}")
    return files


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def _decimals(value: str) -> int:
    _, _, frac = value.partition(".")
    return len(frac)


@dataclass(frozen=True, slots=True)
class _DepthMessage:
    """A depth diff or REST snapshot of one symbol, before the book is built."""

    receive_ns: int
    symbol: str
    event_time_ns: int
    diff: Diff | None  # None: a snapshot
    snapshot: dict[str, Any] | None = None


def _trade(data: dict[str, Any]) -> tuple[int, tick_pb2.Trade]:
    trade = tick_pb2.Trade(
        price=str(data["p"]),
        size=str(data["q"]),
        trade_id=str(data["t"]),
        side=tick_pb2.SIDE_SELL if data.get("m") else tick_pb2.SIDE_BUY,
    )
    return int(data["T"]) * MS_TO_NS, trade


def _quote(data: dict[str, Any], receive_ns: int) -> tuple[int, tick_pb2.Quote]:
    quote = tick_pb2.Quote(
        bid_price=str(data["b"]),
        bid_size=str(data["B"]),
        ask_price=str(data["a"]),
        ask_size=str(data["A"]),
    )
    exchange_ms = data.get("T")
    return int(exchange_ms) * MS_TO_NS if exchange_ms else receive_ns, quote


def _levels(raw: Any) -> list[tuple[str, str]]:
    """``[[price, qty], ...]`` checked to be decimal-looking strings."""
    levels = [(str(price), str(size)) for price, size in raw]
    for price, size in levels:
        Decimal(price), Decimal(size)  # raises InvalidOperation (a ValueError) when not
    return levels


def _diff(data: dict[str, Any]) -> Diff:
    previous = data.get("pu")
    return Diff(
        first=int(data["U"]),
        last=int(data["u"]),
        bids=_levels(data["b"]),
        asks=_levels(data["a"]),
        previous=int(previous) if previous is not None else None,
    )


class _FileParser:
    """Parses one recorded file; tells spot from USDⓈ-M perpetual by the message fields.

    Trades and quotes become :class:`RecordedTick`; depth diffs and the REST snapshot are
    collected in :attr:`depth` (the snapshot names no symbol: it is the file's)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.perpetual: bool | None = None
        self.skipped = 0
        self.depth: list[_DepthMessage] = []
        self._file_symbol = ""
        self._snapshots: list[tuple[int, dict[str, Any]]] = []

    def _symbol(self, raw: str) -> str:
        symbol = raw + PERPETUAL_SUFFIX if self.perpetual else raw
        if not is_valid_symbol(symbol):
            raise ValueError(f"invalid symbol {symbol!r}")
        return symbol

    def _lines(self) -> Iterator[tuple[int, dict[str, Any]]]:
        with _open_text(self.path) as lines:
            for number, line in enumerate(lines, 1):
                stamp, _, payload = line.partition(" ")
                try:
                    receive_ns = int(stamp)
                    message = json.loads(payload)
                except ValueError:
                    message = None
                if not isinstance(message, dict):
                    self.skipped += 1
                    log.debug("%s:%d: not '<ns> <json object>', skipped", self.path, number)
                    continue
                yield receive_ns, message

    def ticks(self) -> Iterator[RecordedTick]:
        for receive_ns, message in self._lines():
            stream, data = message.get("stream"), message.get("data")
            if not isinstance(stream, str) or not isinstance(data, dict):
                if "lastUpdateId" in message:
                    self._snapshots.append((receive_ns, message))
                continue
            kind = stream.partition("@")[2]
            if self.perpetual is None and kind in ("trade", "bookTicker", "depth@0ms"):
                timed_quote = kind == "bookTicker" and "T" in data
                self.perpetual = "X" in data or "pu" in data or timed_quote
            try:
                symbol = self._symbol(str(data["s"]))
                self._file_symbol = self._file_symbol or symbol
                if kind == "trade":
                    yield RecordedTick(receive_ns, symbol, *_trade(data))
                elif kind == "bookTicker":
                    yield RecordedTick(receive_ns, symbol, *_quote(data, receive_ns))
                elif kind.startswith("depth"):
                    event_ns = int(data["E"]) * MS_TO_NS
                    self.depth.append(_DepthMessage(receive_ns, symbol, event_ns, _diff(data)))
            except (KeyError, ValueError, TypeError, ArithmeticError) as error:
                self.skipped += 1
                log.debug("%s: malformed %s message skipped: %s", self.path, kind, error)
        for receive_ns, snapshot in self._snapshots:
            if self._file_symbol:
                self.depth.append(
                    _DepthMessage(receive_ns, self._file_symbol, receive_ns, None, snapshot)
                )


@dataclass(slots=True)
class Recording:
    """What the replay publishes: ``ticks`` sorted by receive time (books built), the symbols'
    metadata, and each break of a book's update-id chain as (receive ns, symbol, break)."""

    ticks: list[RecordedTick]
    infos: list[feed_pb2.SymbolInfo]
    breaks: list[tuple[int, str, ChainBreak]]


def _scales(body: Body) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if isinstance(body, tick_pb2.Trade):
        return (body.price,), (body.size,)
    assert isinstance(body, tick_pb2.Quote)
    return (body.bid_price, body.ask_price), (body.bid_size, body.ask_size)


def _sync(sync: DepthSync, message: _DepthMessage) -> list[tick_pb2.BookUpdate]:
    if message.diff is not None:
        return sync.on_diff(message.diff)
    snapshot = message.snapshot
    assert snapshot is not None
    bids, asks = _levels(snapshot["bids"]), _levels(snapshot["asks"])
    return sync.on_snapshot(int(snapshot["lastUpdateId"]), bids, asks)


def build_books(
    messages: list[_DepthMessage],
) -> tuple[list[RecordedTick], list[tuple[int, str, ChainBreak]]]:
    """Each symbol's book updates, by :class:`DepthSync` over ``messages`` in receive order,
    and the chain breaks met (each also logged)."""
    messages.sort(key=lambda message: message.receive_ns)
    syncs: dict[str, DepthSync] = {}
    out: list[RecordedTick] = []
    breaks: list[tuple[int, str, ChainBreak]] = []
    for message in messages:
        sync = syncs.setdefault(message.symbol, DepthSync())
        try:
            updates = _sync(sync, message)
        except (KeyError, ValueError, TypeError, ArithmeticError) as error:
            log.warning("replay: %s: malformed depth snapshot skipped: %s", message.symbol, error)
            continue
        out.extend(
            RecordedTick(message.receive_ns, message.symbol, message.event_time_ns, update)
            for update in updates
        )
        if sync.last_break is not None:
            breaks.append((message.receive_ns, message.symbol, sync.last_break))
            log.warning(
                "replay: %s book: %s; not published from receive time %d until the next "
                "depth snapshot",
                message.symbol,
                sync.last_break.describe(),
                message.receive_ns,
            )
    return out, breaks


def parse_recording(paths: Iterable[Path]) -> Recording:
    """Parse every file (blocking: run it in a thread) into a :class:`Recording`.

    Scales in the metadata are the most decimals seen in trades and quotes. Raises ReplayError
    when the paths hold no trades or quotes.
    """
    ticks: list[RecordedTick] = []
    depth: list[_DepthMessage] = []
    price_scale: dict[str, int] = {}
    size_scale: dict[str, int] = {}
    venue: dict[str, str] = {}
    for path in expand_paths(paths):
        parser = _FileParser(path)
        count = 0
        for recorded in parser.ticks():
            ticks.append(recorded)
            count += 1
            prices, sizes = _scales(recorded.body)
            symbol = recorded.symbol
            price_scale[symbol] = max(price_scale.get(symbol, 0), *map(_decimals, prices))
            size_scale[symbol] = max(size_scale.get(symbol, 0), *map(_decimals, sizes))
            venue[symbol] = "binance-usdm" if parser.perpetual else "binance-spot"
        depth.extend(parser.depth)
        log.info(
            "replay: %s: %d ticks, %d depth messages (%d malformed lines skipped)",
            path,
            count,
            len(parser.depth),
            parser.skipped,
        )
    if not ticks:
        raise ReplayError("the replay paths hold no trades or quotes")
    books, breaks = build_books([m for m in depth if m.symbol in venue])
    ticks.extend(books)
    ticks.sort(key=lambda recorded: recorded.receive_ns)  # stable: file order kept on ties
    infos = [
        feed_pb2.SymbolInfo(
            symbol=symbol,
            price_scale=price_scale[symbol],
            size_scale=size_scale[symbol],
            source=f"replay:{venue[symbol]}",
        )
        for symbol in sorted(price_scale)
    ]
    return Recording(ticks, infos, breaks)


def load_recording(paths: Iterable[Path]) -> tuple[list[RecordedTick], list[feed_pb2.SymbolInfo]]:
    """:func:`parse_recording`'s ticks and metadata."""
    recording = parse_recording(paths)
    return recording.ticks, recording.infos


class ReplaySource:
    """Replays recorded ticks paced by receive time divided by ``speed`` (0 = no pacing).

    With ``loop`` the recording starts again when it ends; loop ``n`` shifts event times by
    ``n`` times the recording's span so time keeps moving forward, and the hub gives every loop
    new offsets and sequence numbers. Without ``loop`` the source ends and the feed keeps serving.
    """

    name = "replay"

    def __init__(self, paths: list[Path], speed: float, loop: bool) -> None:
        self._paths = paths
        self._speed = speed
        self._loop = loop
        self._ticks: list[RecordedTick] = []
        self.book_breaks: list[tuple[int, str, ChainBreak]] = []

    async def load(self) -> list[feed_pb2.SymbolInfo]:
        recording = await asyncio.to_thread(parse_recording, self._paths)
        self._ticks, infos, self.book_breaks = recording.ticks, recording.infos, recording.breaks
        log.info(
            "replay: loaded %d ticks of %s",
            len(self._ticks),
            ", ".join(info.symbol for info in infos),
        )
        return infos

    async def batches(self, handle: SourceHandle) -> AsyncIterator[list[ingest_pb2.TickDraft]]:
        ticks = self._ticks
        first, last = ticks[0].receive_ns, ticks[-1].receive_ns
        span_ns = last - first + 1_000_000_000
        clock = asyncio.get_running_loop().time
        lap = 0
        while True:
            shift = lap * span_ns
            if self._speed == 0:
                for start in range(0, len(ticks), FAST_BATCH):
                    yield [r.draft(shift) for r in ticks[start : start + FAST_BATCH]]
                    await asyncio.sleep(0)
            else:
                started = clock()
                index = 0
                while index < len(ticks):
                    elapsed_ns = (clock() - started) * self._speed * 1e9
                    end, limit = index, min(len(ticks), index + FAST_BATCH)
                    while end < limit and ticks[end].receive_ns - first <= elapsed_ns:
                        end += 1
                    if end > index:
                        yield [r.draft(shift) for r in ticks[index:end]]
                        index = end
                    if index < len(ticks):
                        wait_ns = (ticks[index].receive_ns - first) - elapsed_ns
                        await asyncio.sleep(max(0.0, wait_ns / self._speed / 1e9))
            if not self._loop:
                log.info("replay: recording ended after lap %d; serving history", lap + 1)
                handle.ended(f"recording ended after lap {lap + 1}")
                return
            lap += 1
