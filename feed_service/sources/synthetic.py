"""Seeded synthetic ticks: a random-walk mid price with a spread, trades around it."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tickstream.v1 import feed_pb2, ingest_pb2, tick_pb2

from ..ingest import make_draft
from ..liveness import SourceHandle

PRICE_SCALE = 2
SIZE_SCALE = 0
BATCH_INTERVAL_S = 0.01


def format_scaled(units: int, scale: int) -> str:
    """Render ``units`` of 10**-scale as an exact decimal string: (1234, 2) -> "12.34"."""
    if scale == 0:
        return str(units)
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**scale)
    return f"{sign}{whole}.{frac:0{scale}d}"


@dataclass(slots=True)
class _Book:
    mid: int  # in 10**-PRICE_SCALE units
    spread: int
    trade_id: int = 0


class SyntheticSource:
    """Deterministic ticks for ``symbols``: the same ``seed`` gives the same sequence of bodies.

    ``rate`` is the total ticks per second over all symbols, paced in batches every 10 ms so
    high rates cost one sleep per batch, not per tick. Prices have 2 decimals, sizes whole units.
    About 30% of ticks are trades at the bid or ask, the rest quotes.
    """

    name = "synthetic"

    def __init__(self, symbols: list[str], seed: int, rate: float) -> None:
        self._symbols = list(dict.fromkeys(symbols))
        self._rng = random.Random(seed)
        self._rate = rate
        self._books = {
            symbol: _Book(mid=self._rng.randint(2_000, 50_000) * 10, spread=self._rng.randint(1, 5))
            for symbol in self._symbols
        }

    async def load(self) -> list[feed_pb2.SymbolInfo]:
        return [
            feed_pb2.SymbolInfo(
                symbol=symbol, price_scale=PRICE_SCALE, size_scale=SIZE_SCALE, source="synthetic"
            )
            for symbol in self._symbols
        ]

    def next_draft(self, event_time_ns: int) -> ingest_pb2.TickDraft:
        """The next tick of the deterministic sequence, stamped with ``event_time_ns``."""
        rng = self._rng
        symbol = self._symbols[rng.randrange(len(self._symbols))]
        book = self._books[symbol]
        book.mid = max(100, book.mid + rng.choice((-2, -1, -1, 0, 0, 0, 1, 1, 2)))
        if rng.random() < 0.05:
            book.spread = rng.randint(1, 5)
        bid, ask = book.mid - book.spread // 2, book.mid - book.spread // 2 + book.spread
        body: tick_pb2.Trade | tick_pb2.Quote
        if rng.random() < 0.3:
            book.trade_id += 1
            buy = rng.random() < 0.5
            body = tick_pb2.Trade(
                price=format_scaled(ask if buy else bid, PRICE_SCALE),
                size=str(rng.choice((1, 1, 2, 5, 10, 25, 100))),
                trade_id=str(book.trade_id),
                side=tick_pb2.SIDE_BUY if buy else tick_pb2.SIDE_SELL,
            )
        else:
            body = tick_pb2.Quote(
                bid_price=format_scaled(bid, PRICE_SCALE),
                bid_size=str(rng.randint(1, 50) * 100),
                ask_price=format_scaled(ask, PRICE_SCALE),
                ask_size=str(rng.randint(1, 50) * 100),
            )
        return make_draft(symbol, event_time_ns, body)

    async def batches(self, handle: SourceHandle) -> AsyncIterator[list[ingest_pb2.TickDraft]]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        emitted = 0
        while True:
            due = int((loop.time() - started) * self._rate) + 1 - emitted
            if due > 0:
                now_ns = time.time_ns()
                yield [self.next_draft(now_ns) for _ in range(due)]
                emitted += due
            wake_at = started + emitted / self._rate
            await asyncio.sleep(max(BATCH_INTERVAL_S, wake_at - loop.time()))
