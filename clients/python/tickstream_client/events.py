"""What a subscription yields: ticks as JSON-shaped dicts, and control events.

A tick is ``google.protobuf.json_format.MessageToDict`` of a ``tickstream.v1.Tick``: the very
object the edge sends as an SSE event's ``data`` (camelCase keys, prices and sizes as the
decimal strings recorded, 64-bit integers such as ``offset`` and ``sequence`` as strings,
timestamps as RFC 3339 strings), e.g.::

    {"symbol": "ETHUSDT", "sequence": "75", "offset": "1282",
     "eventTime": "2024-08-08T23:54:20.816Z", "ingestTime": "2026-11-30T02:11:44.885691460Z",
     "trade": {"price": "2683.20000000", "size": "0.00340000", "tradeId": "1520538999",
               "side": "SIDE_BUY"}}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

from google.protobuf import json_format
from tickstream.v1 import feed_pb2, tick_pb2


class Position(NamedTuple):
    """A point in the feed's history: every tick up to ``offset`` of ``epoch`` was delivered.
    Offsets compare only within one epoch. Pass it as ``after=`` to resume later."""

    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class Reset:
    """The subscription could not continue where it was: ticks may have been missed.

    ``reason`` is ``epoch_changed`` (the feed restarted and lost its history),
    ``offset_too_old``, ``offset_ahead`` or ``slow_consumer`` (as the SSE ``reset`` event);
    ``message`` is human-readable; the ticks that follow are those of ``epoch`` after
    ``offset``. Treat state built from earlier ticks as stale.
    """

    reason: str
    message: str
    epoch: str
    offset: int

    def to_dict(self) -> dict[str, Any]:
        """``{"reason", "message", "epoch", "offset"}``, e.g. for logging as JSON."""
        return {
            "reason": self.reason,
            "message": self.message,
            "epoch": self.epoch,
            "offset": self.offset,
        }


@dataclass(frozen=True, slots=True)
class SymbolStatus:
    """A symbol of the subscription turned ``stale`` (no tick for the feed's stale time) or
    ``live`` again. ``last_tick_time`` is when the feed accepted its last tick (RFC 3339), None
    when it never had one. Not a position: offsets are unaffected."""

    symbol: str
    state: str
    last_tick_time: str | None

    def to_dict(self) -> dict[str, Any]:
        """The SSE ``status`` event's data: ``{"symbol", "state", "lastTickTime"}``."""
        return {"symbol": self.symbol, "state": self.state, "lastTickTime": self.last_tick_time}


Event: TypeAlias = dict[str, Any] | Reset | SymbolStatus
"""One item of a subscription: a tick (a dict), a :class:`Reset` or a :class:`SymbolStatus`."""


def tick_to_dict(tick: tick_pb2.Tick) -> dict[str, Any]:
    """The proto3 JSON mapping of ``tick``, identical to the edge's SSE ``data``."""
    return json_format.MessageToDict(tick)


def reset_event(reset: feed_pb2.Reset) -> Reset:
    """The :class:`Reset` event for the feed's ``Reset`` message."""
    reason = feed_pb2.ResetReason.Name(reset.reason).removeprefix("RESET_REASON_").lower()
    return Reset(reason, reset.message, reset.epoch, reset.head_offset)


def status_event(status: feed_pb2.SymbolStatus) -> SymbolStatus:
    """The :class:`SymbolStatus` event for the feed's ``SymbolStatus`` message."""
    state = feed_pb2.SymbolState.Name(status.state).removeprefix("SYMBOL_STATE_").lower()
    last = status.last_tick_time.ToJsonString() if status.HasField("last_tick_time") else None
    return SymbolStatus(status.symbol, state, last)
