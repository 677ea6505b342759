"""What a tick source is: something that loads, declares its symbols and yields tick batches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from tickstream.v1 import feed_pb2

from ..hub import TickDraft


class TickSource(Protocol):
    """A producer of ticks for the hub.

    ``load`` does the slow preparation (reading files) off the event loop and returns the
    symbols' metadata; ``batches`` then yields lists of drafts in publication order, pacing
    itself with ``asyncio.sleep`` (never a blocking sleep). A finite source simply ends.
    """

    async def load(self) -> list[feed_pb2.SymbolInfo]: ...

    def batches(self) -> AsyncIterator[list[TickDraft]]: ...
