"""Replay of recorded Binance market data (trades and best bid/ask) at its original pacing.

Input format (``data/README.md``): one line per message, ``<receive time ns> <JSON>``, where the
JSON is ``{"stream": "<sym>@trade" | "<sym>@bookTicker" | ..., "data": {...}}``. Depth updates and
REST snapshots are skipped. Prices and quantities stay the decimal strings recorded.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tickstream.v1 import feed_pb2, ingest_pb2, tick_pb2

from tickstream_common.symbols import is_valid_symbol

from ..ingest import make_draft
from ..liveness import SourceHandle

log = logging.getLogger(__name__)

PERPETUAL_SUFFIX = "-PERP"
FAST_BATCH = 2_000
MS_TO_NS = 1_000_000


class ReplayError(Exception):
    """A replay path is missing, empty, or holds no trades or quotes."""


@dataclass(frozen=True, slots=True)
class RecordedTick:
    """One parsed tick: ``receive_ns`` paces the replay; the rest becomes its ``TickDraft``."""

    receive_ns: int
    symbol: str
    event_time_ns: int
    body: tick_pb2.Trade | tick_pb2.Quote

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


class _FileParser:
    """Parses one recorded file; tells spot from USDⓈ-M perpetual by the message fields."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.perpetual: bool | None = None
        self.skipped = 0

    def _symbol(self, raw: str) -> str:
        return raw + PERPETUAL_SUFFIX if self.perpetual else raw

    def parse(self) -> Iterator[tuple[int, str, dict[str, object]]]:
        with _open_text(self.path) as lines:
            for number, line in enumerate(lines, 1):
                stamp, _, payload = line.partition(" ")
                try:
                    receive_ns = int(stamp)
                    message = json.loads(payload)
                except ValueError:
                    self.skipped += 1
                    log.debug("%s:%d: not '<ns> <json>', skipped", self.path, number)
                    continue
                stream = message.get("stream") if isinstance(message, dict) else None
                data = message.get("data") if isinstance(message, dict) else None
                if not isinstance(stream, str) or not isinstance(data, dict):
                    continue  # REST snapshot or other non-stream line
                kind = stream.partition("@")[2]
                if kind not in ("trade", "bookTicker"):
                    continue
                if self.perpetual is None:
                    self.perpetual = (
                        "X" in data or "T" in data if kind == "bookTicker" else "X" in data
                    )
                yield receive_ns, kind, data

    def ticks(self) -> Iterator[RecordedTick]:
        for receive_ns, kind, data in self.parse():
            try:
                symbol = self._symbol(str(data["s"]))
                if not is_valid_symbol(symbol):
                    raise ValueError(f"invalid symbol {symbol!r}")
                if kind == "trade":
                    body: tick_pb2.Trade | tick_pb2.Quote = tick_pb2.Trade(
                        price=str(data["p"]),
                        size=str(data["q"]),
                        trade_id=str(data["t"]),
                        side=tick_pb2.SIDE_SELL if data.get("m") else tick_pb2.SIDE_BUY,
                    )
                    event_ns = int(data["T"]) * MS_TO_NS  # type: ignore[call-overload]
                else:
                    body = tick_pb2.Quote(
                        bid_price=str(data["b"]),
                        bid_size=str(data["B"]),
                        ask_price=str(data["a"]),
                        ask_size=str(data["A"]),
                    )
                    exchange_ms = data.get("T")
                    event_ns = int(exchange_ms) * MS_TO_NS if exchange_ms else receive_ns  # type: ignore[call-overload]
            except (KeyError, ValueError, TypeError) as error:
                self.skipped += 1
                log.debug("%s: malformed %s message skipped: %s", self.path, kind, error)
                continue
            yield RecordedTick(receive_ns, symbol, event_ns, body)


def load_recording(paths: Iterable[Path]) -> tuple[list[RecordedTick], list[feed_pb2.SymbolInfo]]:
    """Parse every file (blocking: run it in a thread) into ticks sorted by receive time.

    Returns the ticks and per-symbol metadata (scales = most decimals seen). Raises ReplayError
    when the paths hold no trades or quotes.
    """
    ticks: list[RecordedTick] = []
    price_scale: dict[str, int] = {}
    size_scale: dict[str, int] = {}
    venue: dict[str, str] = {}
    for path in expand_paths(paths):
        parser = _FileParser(path)
        count = 0
        for recorded in parser.ticks():
            ticks.append(recorded)
            count += 1
            body = recorded.body
            prices = (
                (body.price,)
                if isinstance(body, tick_pb2.Trade)
                else (body.bid_price, body.ask_price)
            )
            sizes = (
                (body.size,) if isinstance(body, tick_pb2.Trade) else (body.bid_size, body.ask_size)
            )
            symbol = recorded.symbol
            price_scale[symbol] = max(price_scale.get(symbol, 0), *map(_decimals, prices))
            size_scale[symbol] = max(size_scale.get(symbol, 0), *map(_decimals, sizes))
            venue[symbol] = "binance-usdm" if parser.perpetual else "binance-spot"
        log.info("replay: %s: %d ticks (%d malformed lines skipped)", path, count, parser.skipped)
    if not ticks:
        raise ReplayError("the replay paths hold no trades or quotes")
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
    return ticks, infos


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

    async def load(self) -> list[feed_pb2.SymbolInfo]:
        self._ticks, infos = await asyncio.to_thread(load_recording, self._paths)
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
