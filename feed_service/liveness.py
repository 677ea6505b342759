"""Whether ticks are flowing: each source's state and each symbol's last tick, and when a
symbol turns stale (no tick for its stale time) or live again.

A dead source must not look live: a replay that ended, an exchange connection that dropped or a
producer that went away leave the feed heartbeating, so staleness is judged from tick times,
never from the streams' liveness.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from tickstream.v1 import feed_pb2

CONNECTED = feed_pb2.SOURCE_STATE_CONNECTED
FLOWING = feed_pb2.SOURCE_STATE_FLOWING
STALE = feed_pb2.SOURCE_STATE_STALE
ENDED = feed_pb2.SOURCE_STATE_ENDED
STATUS_LOG_SIZE = 4_096
MAX_SOURCES = 1_000  # producers without a stream beyond this are forgotten, oldest first


@dataclass(slots=True)
class SourceHandle:
    """One source's state as the feed reports it (``ListSources``, metrics, ``/readyz``).

    Built-in sources and producer streams call :meth:`connected`, :meth:`down` and
    :meth:`ended`; the ingest path calls :meth:`record` for every stored batch. ``flowing`` and
    ``stale`` are judged by :meth:`Liveness.sweep` from ``last_tick_ns``.
    """

    name: str
    state: int = CONNECTED
    last_tick_ns: int = 0  # ingest time of the last tick, ns since the Unix epoch; 0 = none yet
    ticks: int = 0
    detail: str = ""
    streams: int = 0  # open Publish streams sharing this name (producers only)
    since_ns: int = field(default_factory=time.time_ns)  # when it was created or reconnected

    def connected(self, detail: str = "") -> None:
        """(Re)connected: no tick yet on this connection."""
        self.state, self.detail = CONNECTED, detail
        self.since_ns = time.time_ns()

    def down(self, detail: str) -> None:
        """Lost its connection and trying again: reported as stale with ``detail``."""
        self.state, self.detail = STALE, detail

    def ended(self, detail: str) -> None:
        """Finished for good (a replay without --loop, a producer whose stream ended)."""
        self.state, self.detail = ENDED, detail

    def record(self, count: int, now_ns: int) -> None:
        """``count`` ticks of this source were stored at ``now_ns``."""
        self.ticks += count
        self.last_tick_ns = now_ns
        if self.state != ENDED:
            self.state, self.detail = FLOWING, ""

    def info(self) -> feed_pb2.SourceInfo:
        out = feed_pb2.SourceInfo(
            name=self.name, state=self.state, ticks=self.ticks, detail=self.detail
        )
        if self.last_tick_ns:
            out.last_tick_time.FromNanoseconds(self.last_tick_ns)
        return out


@dataclass(slots=True)
class _SymbolClock:
    last_tick_ns: int = 0
    stale: bool = False


@dataclass
class Liveness:
    """Sources, per-symbol last tick times, and the log of symbol state changes.

    ``stale_after`` (seconds) applies to every symbol and source unless ``overrides`` names the
    symbol. A symbol turns stale when :meth:`sweep` finds it quiet for longer; its next tick
    turns it live again (:meth:`touch`, called by the ingest path before the tick is stored, so
    a stream sees ``live`` before the tick). Each change is appended to a bounded log with a
    version number that streams follow (:meth:`changes_since`).
    """

    stale_after: float
    overrides: dict[str, float] = field(default_factory=dict)
    clock_ns: Callable[[], int] = time.time_ns
    sources: dict[str, SourceHandle] = field(default_factory=dict)
    version: int = 0
    _symbols: dict[str, _SymbolClock] = field(default_factory=dict)
    _log: deque[tuple[int, feed_pb2.SymbolStatus]] = field(
        default_factory=lambda: deque(maxlen=STATUS_LOG_SIZE)
    )

    def source(self, name: str) -> SourceHandle:
        """The handle named ``name``, created on first use."""
        handle = self.sources.get(name)
        if handle is None:
            if len(self.sources) >= MAX_SOURCES:
                # Forget producers no stream is open for, oldest first (built-in ones stay).
                gone = [
                    n
                    for n, h in self.sources.items()
                    if n.startswith("publish:") and h.streams == 0 and h.state in (ENDED, STALE)
                ]
                for old in gone[: len(self.sources) - MAX_SOURCES + 1]:
                    del self.sources[old]
            handle = self.sources[name] = SourceHandle(name)
        return handle

    def touch(self, symbols: Iterable[str], now_ns: int) -> None:
        """Ticks of ``symbols`` are being stored at ``now_ns``: stale ones turn live."""
        clocks = self._symbols
        for symbol in symbols:
            clock = clocks.get(symbol)
            if clock is None:
                clock = clocks[symbol] = _SymbolClock()
            clock.last_tick_ns = now_ns
            if clock.stale:
                clock.stale = False
                self._append(symbol, clock)

    def sweep(self, now_ns: int | None = None) -> int:
        """Mark symbols and sources quiet for longer than their stale time; returns how many
        symbols turned stale."""
        now_ns = self.clock_ns() if now_ns is None else now_ns
        turned = 0
        for symbol, clock in self._symbols.items():
            limit_ns = self.stale_after_for(symbol) * 1e9
            if not clock.stale and clock.last_tick_ns and now_ns - clock.last_tick_ns > limit_ns:
                clock.stale = True
                self._append(symbol, clock)
                turned += 1
        limit_ns = self.stale_after * 1e9
        for handle in self.sources.values():
            if handle.state == FLOWING and now_ns - handle.last_tick_ns > limit_ns:
                handle.state, handle.detail = STALE, f"no tick for {self.stale_after:g} s"
            elif handle.state == CONNECTED and now_ns - handle.since_ns > limit_ns:
                # connected, yet nothing comes (e.g. an exchange stream of unknown symbols)
                handle.state = STALE
                handle.detail = f"connected, no tick for {self.stale_after:g} s"
        return turned

    def stale_after_for(self, symbol: str) -> float:
        return self.overrides.get(symbol, self.stale_after)

    def is_stale(self, symbol: str) -> bool:
        clock = self._symbols.get(symbol)
        return clock is not None and clock.stale

    def status(self, symbol: str) -> feed_pb2.SymbolStatus:
        """The symbol's state now, as a ``SymbolStatus``."""
        clock = self._symbols.get(symbol) or _SymbolClock()
        return self._status(symbol, clock)

    def status_fields(self, symbol: str) -> feed_pb2.SymbolInfo:
        """A ``SymbolInfo`` holding only the symbol's ``state`` and ``last_tick_time``."""
        status = self.status(symbol)
        info = feed_pb2.SymbolInfo(state=status.state)
        if status.HasField("last_tick_time"):
            info.last_tick_time.CopyFrom(status.last_tick_time)
        return info

    def changes_since(
        self, version: int, symbols: frozenset[str]
    ) -> Iterator[feed_pb2.SymbolStatus]:
        """State changes of ``symbols`` after ``version``, oldest first. When the log no longer
        reaches back that far, the current state of every symbol that changed meanwhile."""
        log = self._log
        if log and log[0][0] > version + 1:
            yield from (self.status(s) for s in sorted(symbols) if s in self._symbols)
            return
        for number, status in log:
            if number > version and status.symbol in symbols:
                yield status

    def ages(self, now_ns: int | None = None) -> Iterator[tuple[str, float]]:
        """(symbol, seconds since its last tick) for every symbol that had one."""
        now_ns = self.clock_ns() if now_ns is None else now_ns
        for symbol, clock in list(self._symbols.items()):  # metrics read from another thread
            if clock.last_tick_ns:
                yield symbol, max(0.0, (now_ns - clock.last_tick_ns) / 1e9)

    def _status(self, symbol: str, clock: _SymbolClock) -> feed_pb2.SymbolStatus:
        state = feed_pb2.SYMBOL_STATE_STALE if clock.stale else feed_pb2.SYMBOL_STATE_LIVE
        status = feed_pb2.SymbolStatus(symbol=symbol, state=state)
        if clock.last_tick_ns:
            status.last_tick_time.FromNanoseconds(clock.last_tick_ns)
        return status

    def _append(self, symbol: str, clock: _SymbolClock) -> None:
        self.version += 1
        self._log.append((self.version, self._status(symbol, clock)))
