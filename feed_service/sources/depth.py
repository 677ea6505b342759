"""A venue's depth stream made into a chain of book updates, by Binance's documented rules.

Binance ("How to manage a local order book correctly") gives a REST snapshot with
``lastUpdateId`` and a stream of diffs, each covering update ids ``U`` to ``u``:

1. buffer the diffs that arrive before the snapshot;
2. drop every diff with ``u`` <= ``lastUpdateId`` (the snapshot covers it);
3. the first diff applied must have ``U`` <= ``lastUpdateId + 1`` <= ``u``;
4. from then on each diff's ``U`` must be the previous diff's ``u + 1`` (USDⓈ-M futures: its
   ``pu`` must be the previous diff's ``u``): otherwise updates were lost, the local book is
   wrong, and it must start again from a new snapshot;
5. a level's quantity is absolute; a quantity of 0 removes the level.

:class:`DepthSync` applies rules 1-4 and says what to publish: the snapshot (as a
``BookUpdate`` with ``snapshot`` set) and the diffs that follow it in an unbroken chain. After a
break it publishes nothing for the symbol until the next snapshot. Rule 5 is the
:class:`~tickstream_common.book.OrderBook`'s, wherever the updates are applied.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from tickstream.v1 import tick_pb2

PENDING_LIMIT = 1_000
"""Diffs buffered while waiting for a snapshot (about 100 s of ``depth@100ms``)."""


@dataclass(frozen=True, slots=True)
class Diff:
    """One depth diff: update ids ``first``..``last`` and the changed levels; ``previous`` is
    the ``u`` of the diff before it where the venue says (USDⓈ-M futures' ``pu``), else None."""

    first: int
    last: int
    bids: Sequence[Sequence[str]]
    asks: Sequence[Sequence[str]]
    previous: int | None = None


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """Updates were lost: a diff starting at ``first`` came after ``after``."""

    after: int
    first: int

    def describe(self) -> str:
        return (
            f"depth diff starts at update id {self.first} but the book is at {self.after} "
            f"({self.first - self.after - 1} updates missing)"
        )


def book_update(
    bids: Sequence[Sequence[str]],
    asks: Sequence[Sequence[str]],
    first: int,
    last: int,
    snapshot: bool = False,
) -> tick_pb2.BookUpdate:
    """A ``BookUpdate`` from ``[price, size]`` pairs as the venue sends them."""
    update = tick_pb2.BookUpdate(snapshot=snapshot, first_update_id=first, last_update_id=last)
    update.bids.extend(tick_pb2.BookLevel(price=p, size=s) for p, s in bids)
    update.asks.extend(tick_pb2.BookLevel(price=p, size=s) for p, s in asks)
    return update


class DepthSync:
    """One symbol's snapshot-and-diff chain. Feed it messages in arrival order; each call
    returns what to publish (possibly nothing) and, on a break, :attr:`last_break`; after a
    snapshot too old for the buffered diffs, :attr:`stale_snapshot` (fetch another)."""

    def __init__(self) -> None:
        self.synced = False
        self.last_id = 0  # the last update id published while synced
        self._first_after_snapshot = False
        self._pending: deque[Diff] = deque(maxlen=PENDING_LIMIT)
        self.last_break: ChainBreak | None = None
        self.stale_snapshot = False

    def on_snapshot(
        self, last_update_id: int, bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]]
    ) -> list[tick_pb2.BookUpdate]:
        """A REST snapshot: publish it and the buffered diffs it does not cover. A snapshot
        older than the synced book is ignored; one at its very update id is published again
        (a refresh: the whole book as it stands). One older than the first buffered diff it
        does not cover is not published either (rule 3 could not hold): ``stale_snapshot``."""
        self.last_break, self.stale_snapshot = None, False
        if self.synced and last_update_id < self.last_id:
            return []
        if not self.synced and self._too_old(last_update_id):
            self.stale_snapshot = True
            return []
        self.synced, self.last_id = True, last_update_id
        self._first_after_snapshot = True
        out = [book_update(bids, asks, last_update_id, last_update_id, snapshot=True)]
        pending, self._pending = list(self._pending), deque(maxlen=PENDING_LIMIT)
        for index, diff in enumerate(pending):
            out.extend(self.on_diff(diff))
            if not self.synced:  # a break among them: the later ones wait for the next snapshot
                self._pending.extend(pending[index + 1 :])
                break
        return out

    def _too_old(self, last_update_id: int) -> bool:
        """Whether the first buffered diff after ``last_update_id`` starts past it + 1."""
        after = next((d for d in self._pending if d.last > last_update_id), None)
        if after is None or after.previous == last_update_id:
            return False
        return after.first > last_update_id + 1

    def on_diff(self, diff: Diff) -> list[tick_pb2.BookUpdate]:
        """A diff: published when it continues the chain; buffered until a snapshot when not
        synced; on a break the book stops (``last_break`` says why) until the next snapshot."""
        self.last_break = None
        if not self.synced:
            self._pending.append(diff)
            return []
        if diff.last <= self.last_id:
            return []  # covered by the snapshot, or a repeat
        expected = self.last_id + 1
        if self._first_after_snapshot:  # futures: or the diff names the snapshot's id
            follows = diff.first <= expected <= diff.last or diff.previous == self.last_id
        elif diff.previous is not None:  # futures: each diff names the one before it
            follows = diff.previous == self.last_id
        else:
            follows = diff.first == expected
        if not follows:
            self.last_break = ChainBreak(self.last_id, diff.first)
            self.synced = False
            self._pending.append(diff)
            return []
        self._first_after_snapshot = False
        self.last_id = diff.last
        return [book_update(diff.bids, diff.asks, diff.first, diff.last)]
