"""The bundled recording replayed for Nchan and the bare baseline as the feed replays it.

The feed's ``--source replay --speed 1 --loop`` (``feed_service/sources/replay.py``) parses the
recorded files into ticks ordered by receive time, then, from a start clock, hands over every
tick whose receive time (relative to the first) has come, up to 2,000 at once, sleeps until the
next one is due, and after the last one starts again with event times shifted by the
recording's span plus 1 s. The hub numbers each tick (``sequence`` per symbol and kind from 1,
``offset`` feed-wide from 1) and stamps the whole batch with one ``ingestTime``.

This module does the same for the other two servers: the same parser (imported from the feed,
so the ticks are the same ones in the same order), the same pacing rule (:func:`schedule`), the
same numbering and one ``ingestTime`` per batch taken when the batch is published, and the
edge's event bytes (``symbol``, ``sequence``, ``offset``, ``eventTime``, ``ingestTime``, then
``trade`` or ``quote``: the proto3 JSON mapping of ``tickstream.v1.Tick``). The load client then
reads latency from ``ingestTime`` the same way for all three servers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from payload import timestamp_json
from tickstream.v1 import tick_pb2

from feed_service.sources.replay import FAST_BATCH, RecordedTick, load_recording

ROOT = Path(__file__).resolve().parent.parent
RECORDING = ROOT / "data" / "binance" / "spot"  # BTCUSDT + ETHUSDT, about 5 min 46 s
SYMBOLS = ("BTCUSDT", "ETHUSDT")
SIDES = {tick_pb2.SIDE_BUY: "SIDE_BUY", tick_pb2.SIDE_SELL: "SIDE_SELL"}
STARTED = "replay started at"  # + the first batch's publish time, ns since the epoch


def announce_start(ingest_ns: int) -> None:
    """Tell the bench (stdout, the process's log) when the first batch was published: what the
    first tick's ``ingestTime`` is in the feed, so every server's window can open at the same
    point of the recording."""
    print(f"{STARTED} {ingest_ns}", flush=True)


def recording_paths() -> list[Path]:
    """The recorded files the feed is given in the latency scenario (``--replay-path``)."""
    return sorted(RECORDING.glob("*.gz"))


def load_ticks(paths: Sequence[Path] | None = None) -> list[RecordedTick]:
    """Every trade and quote of ``paths`` (default: the recording), ordered by receive time."""
    ticks, _infos = load_recording(list(paths) if paths else recording_paths())
    return ticks


@dataclass(frozen=True, slots=True)
class Batch:
    """Ticks due together; ``shift_ns`` moves their event times (a looped lap)."""

    ticks: Sequence[RecordedTick]
    shift_ns: int


def due_end(ticks: Sequence[RecordedTick], index: int, elapsed_ns: float) -> int:
    """The end of the run of ticks from ``index`` due ``elapsed_ns`` after the replay's start
    (at most ``FAST_BATCH``): the feed's rule."""
    first = ticks[0].receive_ns
    end, limit = index, min(len(ticks), index + FAST_BATCH)
    while end < limit and ticks[end].receive_ns - first <= elapsed_ns:
        end += 1
    return end


def schedule(
    ticks: Sequence[RecordedTick], speed: float = 1.0, clock: Callable[[], float] = time.monotonic
) -> Iterator[Batch | float]:
    """Endless replay of ``ticks`` paced as the feed paces it: yields a :class:`Batch` when
    ticks are due and, between batches, the seconds to sleep before the next one (the caller
    sleeps, with ``time.sleep`` or ``asyncio.sleep``)."""
    first, last = ticks[0].receive_ns, ticks[-1].receive_ns
    span_ns = last - first + 1_000_000_000
    lap = 0
    while True:
        started, index = clock(), 0
        while index < len(ticks):
            elapsed_ns = (clock() - started) * speed * 1e9
            end = due_end(ticks, index, elapsed_ns)
            if end > index:
                yield Batch(ticks[index:end], lap * span_ns)
                index = end
            if index < len(ticks):
                wait_ns = (ticks[index].receive_ns - first) - elapsed_ns
                yield max(0.0, wait_ns / speed / 1e9)
        lap += 1


def body_json(body: tick_pb2.Trade | tick_pb2.Quote) -> tuple[str, str]:
    """(``trade`` or ``quote``, the body's JSON member) in the edge's field order."""
    if isinstance(body, tick_pb2.Trade):
        trade = {"price": body.price, "size": body.size, "tradeId": body.trade_id}
        trade["side"] = SIDES[body.side]
        return "trade", '"trade":' + json.dumps(trade, separators=(",", ":"))
    quote = {"bidPrice": body.bid_price, "bidSize": body.bid_size}
    quote |= {"askPrice": body.ask_price, "askSize": body.ask_size}
    return "quote", '"quote":' + json.dumps(quote, separators=(",", ":"))


@dataclass(slots=True)
class TickNumbers:
    """The hub's numbering: ``sequence`` per (symbol, kind) from 1, ``offset`` from 1."""

    offset: int = 0
    sequences: dict[tuple[str, str], int] = field(default_factory=dict)

    def event(self, tick: RecordedTick, shift_ns: int, ingest_ns: int) -> tuple[str, str]:
        """(``trade`` or ``quote``, the tick's JSON) numbered next, stamped ``ingest_ns``."""
        kind, body = body_json(tick.body)
        key = (tick.symbol, kind)
        self.sequences[key] = sequence = self.sequences.get(key, 0) + 1
        self.offset += 1
        return kind, (
            f'{{"symbol":"{tick.symbol}","sequence":"{sequence}","offset":"{self.offset}",'
            f'"eventTime":{timestamp_json(tick.event_time_ns + shift_ns)},'
            f'"ingestTime":{timestamp_json(ingest_ns)},{body}}}'
        )
