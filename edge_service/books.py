"""Order books kept from the feed's book ticks, and their ``book`` events at the depths in use.

The feed sends book updates (changed levels) after one whole-book snapshot per symbol at the
start of a stream (see ``BookUpdate`` in ``tick.proto``); a client wants the top N levels a side
after each update. An upstream keeps its symbol's book and encodes each update once per depth
its clients asked for (``depth=N``), shared by every client of that depth; a resuming client's
catch-up keeps its own books for the history it reads.
"""

from __future__ import annotations

from collections.abc import Iterable

from tickstream.v1 import tick_pb2

from tickstream_common.book import OrderBook

from .encoding import BOOK_KIND, EncodedTick, encode_book

DEFAULT_DEPTH = 10
MAX_DEPTH = 100


def depths_of(kinds: Iterable[str]) -> list[int]:
    """The book depths named by ``kinds`` (``book:<depth>`` entries)."""
    return [int(kind[len(BOOK_KIND) :]) for kind in kinds if kind.startswith(BOOK_KIND)]


class BookViews:
    """The books of some symbols; each update applied, then encoded at the given depths."""

    __slots__ = ("_books", "_last")

    def __init__(self) -> None:
        self._books: dict[str, OrderBook] = {}
        self._last: dict[str, tick_pb2.Tick] = {}  # each symbol's newest book tick

    def take(self, tick: tick_pb2.Tick, depths: Iterable[int], epoch: str) -> list[EncodedTick]:
        """Apply ``tick`` (a book tick) to its symbol's book; its events at ``depths`` (none
        while the book has had no snapshot)."""
        symbol = tick.symbol
        book = self._books.get(symbol)
        if book is None:
            book = self._books[symbol] = OrderBook()
        book.apply(tick.book)
        self._last[symbol] = tick
        if not book.valid:
            return []
        return [encode_book(tick, book, depth, epoch) for depth in depths]

    def current(self, symbol: str, depth: int, epoch: str) -> EncodedTick | None:
        """``symbol``'s book event at ``depth`` as of its newest update (None: no book yet)."""
        book, tick = self._books.get(symbol), self._last.get(symbol)
        if book is None or tick is None or not book.valid:
            return None
        return encode_book(tick, book, depth, epoch)

    def clear(self) -> None:
        """Forget every book (a reset: the next stream starts them again from snapshots)."""
        self._books.clear()
        self._last.clear()
