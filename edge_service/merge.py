"""The offset-ordered merge of several symbols, done once per symbol set and shared by every client
of that set (``/sse?symbols=A,B``), instead of once per client.

A :class:`SymbolMerge` listens to each symbol's shared upstream and looks like one more upstream
to its clients: ``epoch``, ``watermark`` (every tick of every symbol up to it was dispatched) and
offset-ordered dispatches. A symbol's ticks wait until every symbol's upstream has passed their
offset, then all are released in offset order, so the id of the last event a client saw is a
complete resume cursor for all of its symbols.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from .encoding import EncodedTick
from .upstream import SymbolUpstream, TickDispatch, TickListener, UpstreamPool


@dataclass(slots=True)
class _SymbolState:
    epoch: str | None
    watermark: int
    pending: deque[EncodedTick] = field(default_factory=deque)
    reset_head: int = 0  # where the upstream's stream restarted after its last reset
    start: int = 0  # ticks of this symbol at or below this offset were past when we joined


class SymbolMerge:
    """One symbol set's ordered merge; its ``listeners`` are the clients of exactly that set.

    Made from upstreams of one epoch, already ready. After a feed restart it waits until every
    symbol's upstream is in the new epoch, then resumes after the highest point any of them
    restarted at and tells its listeners with one ``epoch_changed`` reset.
    """

    def __init__(self, upstreams: list[SymbolUpstream]) -> None:
        self.upstreams = upstreams
        self.symbols = [u.symbol for u in upstreams]
        self.listeners: set[TickListener] = set()
        self.fan_outs: dict[frozenset[str], TickListener] = {}  # see fanout.join
        self.epoch = upstreams[0].epoch
        # The merge starts after the furthest upstream's watermark: one that is ahead has already
        # dispatched the ticks up to it, so starting lower would leave them out of a stream whose
        # later ids claim them (a client saw offsets 309153 then 309164). A lagging upstream's
        # ticks up to the start are before the stream, as the head is for a live start; until
        # it reaches the start the merge is not ``settled``: its snapshot of that symbol would
        # miss them, so clients wanting one get it with the first dispatch (which comes after).
        start = max(u.watermark for u in upstreams)
        self.settled = all(u.watermark >= start for u in upstreams)
        self._states = {
            u.symbol: _SymbolState(u.epoch, u.watermark, start=start) for u in upstreams
        }
        self.watermark = start
        # The latest released tick of each (symbol, kind): snapshots agree with what follows
        # them. At the start the upstreams' latest ticks are the merge's.
        self._latest = {
            (tick.symbol, tick.kind): tick for u in upstreams for tick in u.snapshot(u.latest)
        }
        self._at_start = dict(self._latest)  # the latest ticks up to the start, once settled
        self.closed_reason: str | None = None
        # A feed restart seen by some of our upstreams: (new epoch, reason, message).
        self._epoch_change: tuple[str, str, str] | None = None

    def snapshot(self, kinds: Iterable[str]) -> list[EncodedTick]:
        """The latest released tick of each kind of each symbol, in offset order: a client
        joining now gets, after it, exactly the ticks released later. A book depth first asked
        for after the merge's start is its upstream's current book when released already."""
        latest = self._latest
        for upstream in self.upstreams:
            for kind in kinds:
                tick = upstream.latest.get(kind)
                if tick is None or tick.offset > self.watermark:
                    continue
                known = latest.get((upstream.symbol, kind))
                if known is None or known.offset < tick.offset:
                    latest[(upstream.symbol, kind)] = tick
        return _by_offset(latest, kinds)

    def snapshot_at_start(self, kinds: Iterable[str]) -> list[EncodedTick]:
        """As :meth:`snapshot`, at the merge's start: for a client that joined before it was
        ``settled``, sent with the first dispatch (which may hold later ticks)."""
        return _by_offset(self._at_start, kinds)

    def stale_frames(self) -> list[bytes]:
        """The ``status`` events of the symbols that are stale now."""
        return [frame for u in self.upstreams for frame in u.stale_frames()]

    # ----- from the upstreams ----------------------------------------------------------------

    def on_ticks(self, upstream: SymbolUpstream, dispatch: TickDispatch) -> None:
        state = self._states[upstream.symbol]
        state.epoch, state.watermark = upstream.epoch, upstream.watermark
        if upstream.epoch != self.epoch:
            if self._epoch_change is not None and upstream.epoch == self._epoch_change[0]:
                state.pending.extend(dispatch.ticks)
            return
        start = state.start
        if dispatch.ticks and dispatch.ticks[0].offset <= start:
            # Before the start: not sent, but what a snapshot at the start shows.
            for tick in dispatch.ticks:
                if tick.offset <= start:
                    self._latest[(tick.symbol, tick.kind)] = tick
                    self._at_start[(tick.symbol, tick.kind)] = tick
        state.pending.extend(t for t in dispatch.ticks if t.offset > start)
        self._release()

    def on_reset(
        self, upstream: SymbolUpstream, reason: str, message: str, symbols: list[str]
    ) -> None:
        state = self._states[upstream.symbol]
        state.epoch, state.watermark = upstream.epoch, upstream.watermark
        state.pending.clear()
        state.reset_head = upstream.watermark
        if upstream.epoch != self.epoch:
            # The feed restarted. Ticks held from the old epoch cannot be ordered against the
            # new one: drop them; the reset tells the clients their state is stale.
            if self._epoch_change is None:
                for other in self._states.values():
                    other.pending.clear()
            assert upstream.epoch is not None
            self._epoch_change = (upstream.epoch, reason, message)
            self._finish_epoch_change()
        elif reason != "epoch_changed":
            for listener in list(self.listeners):
                listener.on_reset(self, reason, message, symbols)
        self._release()

    def on_status(self, upstream: SymbolUpstream, frame: bytes) -> None:
        for listener in list(self.listeners):
            listener.on_status(self, frame)

    def on_closed(self, upstream: SymbolUpstream, reason: str) -> None:
        self.closed_reason = f"{upstream.symbol}: {reason}"
        for listener in list(self.listeners):
            listener.on_closed(self, self.closed_reason)

    # ----- ordering --------------------------------------------------------------------------

    def _finish_epoch_change(self) -> None:
        assert self._epoch_change is not None
        epoch, reason, message = self._epoch_change
        states = self._states.values()
        if any(s.epoch != epoch for s in states):
            return
        self._epoch_change = None
        self.epoch = epoch
        self._latest.clear()
        self.watermark = max(s.reset_head for s in states)
        for state in states:
            state.pending = deque(t for t in state.pending if t.offset > self.watermark)
            state.start = self.watermark
        for listener in list(self.listeners):
            listener.on_reset(self, reason, message, self.symbols)

    def _release(self) -> None:
        """Dispatch, in offset order, every pending tick that no symbol can still precede."""
        states = self._states.values()
        if any(s.epoch != self.epoch for s in states):
            return
        limit = min(s.watermark for s in states)
        if limit >= self.watermark:
            self.settled = True
        runs = []
        for state in states:
            run = []
            pending = state.pending
            while pending and pending[0].offset <= limit:
                run.append(pending.popleft())
            if run:
                runs.append(run)
        if len(runs) > 1:
            ticks = list(heapq.merge(*runs, key=lambda t: t.offset))
        else:
            ticks = runs[0] if runs else []
        if not ticks and limit <= self.watermark:
            return
        self.watermark = max(self.watermark, limit)
        latest = self._latest
        for tick in ticks:
            latest[(tick.symbol, tick.kind)] = tick
        dispatch = TickDispatch(ticks, self.epoch, self.watermark)
        for listener in list(self.listeners):
            listener.on_ticks(self, dispatch)


def _by_offset(
    latest: dict[tuple[str, str], EncodedTick], kinds: Iterable[str]
) -> list[EncodedTick]:
    wanted = set(kinds)
    return sorted((t for (_, k), t in latest.items() if k in wanted), key=lambda t: t.offset)


class MergePool:
    """The merges in use, one per symbol set, each attached to its symbols' upstreams while it
    has clients."""

    def __init__(self, upstreams: UpstreamPool) -> None:
        self._upstreams = upstreams
        self._merges: dict[frozenset[str], SymbolMerge] = {}

    def __len__(self) -> int:
        return len(self._merges)

    def get(self, upstreams: list[SymbolUpstream]) -> SymbolMerge:
        """The merge of ``upstreams`` (ready, one epoch), opened and listening if needed: call
        right after acquiring them and join it at once, without awaiting in between."""
        key = frozenset(u.symbol for u in upstreams)
        merge = self._merges.get(key)
        if merge is None or merge.closed_reason is not None or merge.upstreams != upstreams:
            merge = self._merges[key] = SymbolMerge(upstreams)
            self._upstreams.attach(merge, upstreams)
        return merge

    def release(self, merge: SymbolMerge) -> None:
        """Close ``merge`` once nothing listens to it any more."""
        if merge.listeners:
            return
        key = frozenset(merge.symbols)
        if self._merges.get(key) is merge:
            del self._merges[key]
        self._upstreams.detach(merge, merge.symbols)
