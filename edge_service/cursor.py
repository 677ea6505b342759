"""The SSE event id: a resume cursor ``<epoch>-<offset>`` (or ``earliest``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

EARLIEST = "earliest"
_CURSOR = re.compile(r"([0-9a-f]{1,64})-([0-9]{1,20})")


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in one epoch of the feed: the client has every tick up to ``offset``."""

    epoch: str
    offset: int

    def __str__(self) -> str:
        return format_event_id(self.epoch, self.offset)


class MalformedCursor(ValueError):
    """A Last-Event-ID that is neither ``earliest`` nor ``<epoch>-<offset>``."""


def format_event_id(epoch: str, offset: int) -> str:
    """The SSE ``id`` field value for the tick at ``offset`` in ``epoch``."""
    return f"{epoch}-{offset}"


def parse_cursor(value: str) -> Cursor | str:
    """Parse a Last-Event-ID: ``"earliest"`` or a :class:`Cursor`.

    Raises MalformedCursor for anything else (the edge answers it with a reset event).
    """
    value = value.strip()
    if value == EARLIEST:
        return EARLIEST
    match = _CURSOR.fullmatch(value)
    if match is None or int(match[2]) >= 2**64:
        raise MalformedCursor("the resume cursor is neither 'earliest' nor '<epoch>-<offset>'")
    return Cursor(match[1], int(match[2]))
