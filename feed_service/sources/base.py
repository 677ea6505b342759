"""What a tick source is: something that loads, declares its symbols and yields tick batches.

Built-in sources feed the hub through the same ingest path as producers' ``Publish`` streams
(:class:`feed_service.ingest.Ingestor`): their batches are validated, deduplicated by
``dedup_id`` and numbered like anyone else's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from tickstream.v1 import feed_pb2, ingest_pb2

from ..liveness import SourceHandle


class TickSource(Protocol):
    """A producer of ticks inside the feed.

    ``name`` names the source in ``ListSources``, metrics and ``/readyz`` ("replay",
    "synthetic", "binance"). ``load`` does the slow preparation (reading files) off the event
    loop and returns the metadata of the symbols known up front (a source may also introduce
    symbols later, by publishing them). ``batches`` then yields lists of
    ``tickstream.v1.TickDraft`` in publication order, pacing itself with ``asyncio.sleep``
    (never a blocking sleep), and reports its connection state on ``handle``
    (``connected``/``down``); a finite source simply ends.
    """

    name: str

    async def load(self) -> list[feed_pb2.SymbolInfo]: ...

    def batches(self, handle: SourceHandle) -> AsyncIterator[list[ingest_pb2.TickDraft]]: ...
