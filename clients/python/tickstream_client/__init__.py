"""tickstream's Python client: subscribe to the feed and publish to it over gRPC.

``subscribe`` is an async iterator of ticks (the SSE JSON shape, as dicts) that resumes by
itself after dropped connections and feed restarts, yielding every tick once or a ``Reset``;
``Publisher`` batches ticks onto one Publish stream and resends unacknowledged batches after a
reconnect, so the feed stores each tick once. The generated code it speaks is ``tickstream.v1``.
"""

from __future__ import annotations

from .batches import Ack
from .connection import Backoff
from .drafts import check_draft, draft_from, quote, trade
from .errors import PublishError, SubscribeError, TickstreamError
from .events import Event, Position, Reset, SymbolStatus, tick_to_dict
from .publisher import Publisher, PublishStats
from .subscriber import Subscription, subscribe

__all__ = [
    "Ack",
    "Backoff",
    "Event",
    "Position",
    "PublishError",
    "PublishStats",
    "Publisher",
    "Reset",
    "SubscribeError",
    "Subscription",
    "SymbolStatus",
    "TickstreamError",
    "check_draft",
    "draft_from",
    "quote",
    "subscribe",
    "tick_to_dict",
    "trade",
]
