"""A bounded history of ticks addressed by their contiguous feed-wide offset."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar


class HasOffset(Protocol):
    @property
    def offset(self) -> int: ...


T = TypeVar("T", bound=HasOffset)


class TickHistory(Generic[T]):
    """Ring buffer of the newest ``capacity`` ticks; offsets are contiguous, starting at 1 (or
    where :meth:`start_at` put them).

    Lookup by offset is O(1): the tick with offset ``o`` sits in slot ``o % capacity``. It holds
    anything with an ``offset`` (the feed stores :class:`feed_service.wire.StoredTick`).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("history capacity must be at least 1")
        self._capacity = capacity
        self._slots: list[T | None] = [None] * capacity
        self._head = 0  # newest offset, 0 when empty
        self._floor = 1  # the first offset this history was started at

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def head_offset(self) -> int:
        """The newest offset appended (0 when nothing has been)."""
        return self._head

    @property
    def earliest_offset(self) -> int:
        """The oldest offset still retained (0 when empty)."""
        if self._head < self._floor:
            return 0
        return max(self._floor, self._head - self._capacity + 1)

    def __len__(self) -> int:
        return min(self._head - self._floor + 1, self._capacity)

    def start_at(self, offset: int) -> None:
        """Forget everything and make ``offset`` (>= 1) the next one appended: a cache of a log
        whose older offsets live elsewhere (the JetStream backbone) starts where it joins."""
        if offset < 1:
            raise ValueError("offsets start at 1")
        self._slots = [None] * self._capacity
        self._floor = offset
        self._head = offset - 1

    def append(self, tick: T) -> None:
        """Store ``tick``, evicting the oldest when full.

        Raises ValueError unless ``tick.offset`` is exactly ``head_offset + 1``.
        """
        if tick.offset != self._head + 1:
            raise ValueError(f"offset {tick.offset} does not follow head {self._head}")
        self._slots[tick.offset % self._capacity] = tick
        self._head = tick.offset

    def extend(self, ticks: list[T]) -> None:
        """:meth:`append` each of ``ticks`` (offsets contiguous from ``head_offset + 1``), with
        one check for the run. Raises ValueError, storing nothing, when they do not follow."""
        if not ticks:
            return
        first, last = ticks[0].offset, ticks[-1].offset
        if first != self._head + 1 or last - first + 1 != len(ticks):
            raise ValueError(f"offsets {first}..{last} do not follow head {self._head}")
        slots, capacity = self._slots, self._capacity
        for tick in ticks:
            slots[tick.offset % capacity] = tick
        self._head = last

    def covers_after(self, offset: int) -> bool:
        """True when every tick after ``offset`` (up to the head) is still retained."""
        if offset >= self._head:
            return offset == self._head
        return self._head >= self._floor and offset + 1 >= self.earliest_offset

    def after(self, offset: int, limit: int) -> Iterator[T]:
        """Yield up to ``limit`` retained ticks with offsets greater than ``offset``, in order.

        Offsets older than the history are skipped: callers check :meth:`covers_after` first.
        """
        start = max(offset + 1, self.earliest_offset)
        stop = min(self._head, start + limit - 1)
        slots, capacity = self._slots, self._capacity
        for position in range(start, stop + 1):
            tick = slots[position % capacity]
            assert tick is not None
            yield tick
