"""An L2 order book kept from ``tickstream.v1.BookUpdate`` messages, exact to the decimal.

The feed keeps one per symbol (to start each book subscriber from a snapshot) and so does each
edge upstream (to send the top levels after every update). Levels are keyed by their decimal
value, so ``"61837.63"`` and ``"61837.63000000"`` are one level; the text kept is the newest
update's, so prices and sizes reach clients with the digits the source sent.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from decimal import Decimal

from tickstream.v1 import tick_pb2

Level = tuple[str, str]
"""One level as (price, size), decimal strings."""


def is_zero(size: str) -> bool:
    """True for a decimal string of value 0 ("0", "0.000"): such a level is removed."""
    return not size.strip("0.")


class _Side:
    """One side's levels: value -> (price text, size text), and the values in ascending order."""

    __slots__ = ("keys", "levels")

    def __init__(self) -> None:
        self.levels: dict[Decimal, Level] = {}
        self.keys: list[Decimal] = []

    def set(self, price: str, size: str) -> None:
        key = Decimal(price)
        levels = self.levels
        if is_zero(size):
            if levels.pop(key, None) is not None:
                keys = self.keys
                del keys[bisect_left(keys, key)]
            return
        if key not in levels:
            insort(self.keys, key)
        levels[key] = (price, size)

    def clear(self) -> None:
        self.levels.clear()
        self.keys.clear()

    def copy(self) -> _Side:
        other = _Side()
        other.levels = dict(self.levels)
        other.keys = list(self.keys)
        return other


class OrderBook:
    """Bids and asks of one symbol. Not ``valid`` until a snapshot was applied: updates before
    it are applied but the book is incomplete. ``last_update_id`` is the venue's id of the
    newest update applied (0 when the source gives none)."""

    __slots__ = ("_asks", "_bids", "last_update_id", "valid")

    def __init__(self) -> None:
        self._bids = _Side()
        self._asks = _Side()
        self.valid = False
        self.last_update_id = 0

    def __len__(self) -> int:
        return len(self._bids.keys) + len(self._asks.keys)

    def apply(self, update: tick_pb2.BookUpdate) -> None:
        """Apply one update: a snapshot replaces the book, other levels replace theirs (size 0
        removes). Prices and sizes must be decimal strings (the feed validated them)."""
        bids, asks = self._bids, self._asks
        if update.snapshot:
            bids.clear()
            asks.clear()
            self.valid = True
        for level in update.bids:
            bids.set(level.price, level.size)
        for level in update.asks:
            asks.set(level.price, level.size)
        if update.last_update_id:
            self.last_update_id = update.last_update_id

    def top(self, depth: int) -> tuple[list[Level], list[Level]]:
        """The best ``depth`` levels a side: bids descending, asks ascending by price."""
        bid_levels, ask_levels = self._bids.levels, self._asks.levels
        bid_keys, ask_keys = self._bids.keys, self._asks.keys
        bids = [bid_levels[key] for key in bid_keys[: -depth - 1 : -1]] if depth else []
        asks = [ask_levels[key] for key in ask_keys[:depth]]
        return bids, asks

    def snapshot(self) -> tick_pb2.BookUpdate:
        """The whole book as a snapshot update (best levels first on each side)."""
        bids, asks = self.top(len(self))
        update = tick_pb2.BookUpdate(
            snapshot=True,
            first_update_id=self.last_update_id,
            last_update_id=self.last_update_id,
        )
        update.bids.extend(tick_pb2.BookLevel(price=p, size=s) for p, s in bids)
        update.asks.extend(tick_pb2.BookLevel(price=p, size=s) for p, s in asks)
        return update

    def copy(self) -> OrderBook:
        other = OrderBook()
        other._bids, other._asks = self._bids.copy(), self._asks.copy()
        other.valid, other.last_update_id = self.valid, self.last_update_id
        return other
