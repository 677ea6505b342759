"""Candles (OHLCV bars) made from each symbol's trades, by exchange event time.

For every configured interval a trade belongs to the bar ``[start, start + interval)`` holding
its event time (start aligned to the interval since the Unix epoch). A bar is published as a
``Bar`` tick: ``final=false`` when its first trade arrives and then at most once a second (wall
clock) while it fills, the last change at most a second late (:meth:`BarMaker.due`, which the
feed calls several times a second); and once with ``final=true`` when a trade of a later bar
shows it closed. Prices stay the trades' decimal strings; volumes are exact decimal sums. A
trade whose event time is before its symbol's open bar (a producer's clock going back) counts
in the open bar: a final bar is never reopened. A bar of a symbol that stops trading stays open
until its next trade.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Context, Decimal

from tickstream.v1 import ingest_pb2

INTERVAL = re.compile(r"([1-9][0-9]{0,3})([smhd])")
UNIT_NS = {"s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
UNIT_NS["d"] = 24 * UNIT_NS["h"]
UPDATE_EVERY_S = 1.0
"""An open bar is published at most this often (wall clock)."""
_EXACT = Context(prec=60)  # sums of products of 40-digit decimals stay exact


def interval_ns(interval: str) -> int:
    """``"1s"``, ``"5m"``, ``"1h"``, ``"1d"`` in ns. Raises ValueError for anything else."""
    match = INTERVAL.fullmatch(interval)
    if match is None:
        raise ValueError(f"bar interval {interval!r} is not <1-9999><s|m|h|d>, e.g. 1s or 1m")
    return int(match[1]) * UNIT_NS[match[2]]


def _text(value: Decimal) -> str:
    return format(value, "f")


@dataclass(frozen=True, slots=True)
class _Bar:
    start_ns: int
    open: str
    high: str
    low: str
    close: str
    volume: Decimal
    quote_volume: Decimal
    trades: int
    event_ns: int  # of its newest trade
    published: float  # monotonic time of its last publication (-inf: never)
    dirty: bool = False  # changed since then

    def add(self, price: str, size: str) -> _Bar:
        value = Decimal(price)
        high = price if value > Decimal(self.high) else self.high
        low = price if value < Decimal(self.low) else self.low
        quantity = Decimal(size)
        return replace(
            self,
            high=high,
            low=low,
            close=price,
            volume=_EXACT.add(self.volume, quantity),
            quote_volume=_EXACT.add(self.quote_volume, _EXACT.multiply(value, quantity)),
            trades=self.trades + 1,
            dirty=True,
        )


def _opened(start_ns: int, price: str, size: str) -> _Bar:
    quantity = Decimal(size)
    notional = _EXACT.multiply(Decimal(price), quantity)
    return _Bar(start_ns, price, price, price, price, quantity, notional, 1, 0, -math.inf, True)


class BarMaker:
    """Bars of ``intervals`` (e.g. ``["1s", "1m"]``) for every symbol that trades."""

    def __init__(
        self, intervals: Sequence[str], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.intervals = list(intervals)
        self._lengths = [(interval, interval_ns(interval)) for interval in intervals]
        self._bars: dict[tuple[str, str], _Bar] = {}
        self._clock = clock

    def on_trades(
        self, drafts: Iterable[ingest_pb2.TickDraft], now_ns: int
    ) -> tuple[list[ingest_pb2.TickDraft], Callable[[], None]]:
        """The bar drafts that ``drafts`` (validated; one without event time is at ``now_ns``,
        as the hub stamps it) make, in order, and the commit to call once the trades and the
        bars are stored: until then nothing changes, so a batch the backbone refused can be
        offered again."""
        if not self._lengths:
            return [], _nothing
        bars, now = self._bars, self._clock()
        changed: dict[tuple[str, str], _Bar] = {}
        out: list[ingest_pb2.TickDraft] = []
        for draft in drafts:
            if not draft.HasField("trade"):
                continue
            symbol, trade = draft.symbol, draft.trade
            timed = draft.HasField("event_time")
            event_ns = draft.event_time.ToNanoseconds() if timed else now_ns
            for interval, length in self._lengths:
                key = (symbol, interval)
                bar = changed.get(key) or bars.get(key)
                start = event_ns - event_ns % length
                if bar is not None and start > bar.start_ns:
                    out.append(_draft(symbol, interval, bar, bar.start_ns + length, final=True))
                    bar = None
                if bar is None:
                    bar = _opened(start, trade.price, trade.size)
                else:
                    bar = bar.add(trade.price, trade.size)
                bar = replace(bar, event_ns=max(bar.event_ns, event_ns))
                if now - bar.published >= UPDATE_EVERY_S:
                    bar = replace(bar, published=now, dirty=False)
                    out.append(_draft(symbol, interval, bar, event_ns, final=False))
                changed[key] = bar
        return out, lambda: bars.update(changed)

    def due(self) -> tuple[list[ingest_pb2.TickDraft], Callable[[], None]]:
        """Updates of the open bars that changed since their last publication, a second or
        more ago; and the commit to call once they are stored."""
        now = self._clock()
        changed = {
            key: replace(bar, published=now, dirty=False)
            for key, bar in self._bars.items()
            if bar.dirty and now - bar.published >= UPDATE_EVERY_S
        }
        out = [
            _draft(symbol, interval, bar, bar.event_ns, final=False)
            for (symbol, interval), bar in changed.items()
        ]
        return out, lambda: self._bars.update(changed)


def _nothing() -> None:
    return None


def _draft(
    symbol: str, interval: str, bar: _Bar, event_ns: int, final: bool
) -> ingest_pb2.TickDraft:
    draft = ingest_pb2.TickDraft(symbol=symbol)
    body = draft.bar
    body.interval = interval
    body.start.FromNanoseconds(bar.start_ns)
    body.open, body.high, body.low, body.close = bar.open, bar.high, bar.low, bar.close
    body.volume, body.quote_volume = _text(bar.volume), _text(bar.quote_volume)
    body.trades, body.final = bar.trades, final
    draft.event_time.FromNanoseconds(event_ns)
    return draft
