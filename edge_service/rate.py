"""``max_rate=R``: at most R updates a second per symbol and type for one client.

A browser on a phone wants the newest price a few times a second, not every quote. A rated
client's ticks are held and released together every 1/R seconds: of quotes and books (and, with
bars, open bars) only the newest per (symbol, type) is kept, so each reaches the client at most R
times a second and is the newest at its send time; trades are never dropped, only batched. A
release is written in offset order, so the id of the last event a client saw stays a complete
resume cursor (what it did not see was superseded).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .encoding import EncodedTick, conflates

MAX_RATE = 100.0
"""Above this a cap saves nothing worth its timer."""
MIN_RATE = 0.1
"""Below this a client would wait over 10 s for its ticks (and the edge hold them as long)."""


class RateGate:
    """Holds one client's live ticks between releases; ``release(ticks)`` writes them."""

    __slots__ = (
        "_closed",
        "_held",
        "_interval",
        "_kept",
        "_last",
        "_limit",
        "_overflow",
        "_release",
        "_timer",
    )

    def __init__(
        self,
        rate: float,
        release: Callable[[list[EncodedTick]], None],
        *,
        limit: int,
        overflow: Callable[[], None],
    ) -> None:
        """``limit``: ticks held at most (the client's queue bound); past it ``overflow`` is
        called (the stream ends as a slow consumer) and nothing more is held."""
        self._interval = 1.0 / rate
        self._release = release
        self._limit, self._overflow = limit, overflow
        self._closed = False
        self._held: list[EncodedTick] = []  # trades and final bars, in offset order
        self._kept: dict[tuple[str, str], EncodedTick] = {}  # the newest of each other kind
        self._last = 0.0  # loop time of the last release
        self._timer: asyncio.TimerHandle | None = None

    def push(self, tick: EncodedTick) -> None:
        """Hold ``tick`` for the next release (scheduled if none is); nothing once closed."""
        if self._closed:
            return
        if not conflates(tick.kind):
            self._held.append(tick)
            if len(self._held) > self._limit:
                self.close()
                self._overflow()
                return
        else:
            self._kept[(tick.symbol, tick.kind)] = tick
        if self._timer is None:
            loop = asyncio.get_running_loop()
            at = max(loop.time(), self._last + self._interval)
            self._timer = loop.call_at(at, self._flush)

    def release_now(self) -> None:
        """Release what is held at once: before a ``reset``, whose ticks must not follow it."""
        if self._timer is not None:
            self._timer.cancel()
            self._flush()

    def _flush(self) -> None:
        self._timer = None
        self._last = asyncio.get_running_loop().time()
        ticks = self._held
        ticks.extend(self._kept.values())
        self._held, self._kept = [], {}
        ticks.sort(key=_offset)
        self._release(ticks)

    def close(self) -> None:
        """Drop what is held (the stream ended) and the pending release."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._held, self._kept = [], {}


def _offset(tick: EncodedTick) -> int:
    return tick.offset
