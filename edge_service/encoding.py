"""Ticks and control messages to SSE bytes, each encoded once and shared by every client.

Framing follows the WHATWG HTML standard, section "Server-sent events" (9.2), through
sse-starlette's ``ServerSentEvent``; ``data`` is one line of JSON, the proto3 JSON mapping of a
``tickstream.v1.Tick`` (prices and sizes as decimal strings, uint64 fields as strings).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from sse_starlette import ServerSentEvent
from tickstream.v1 import feed_pb2, tick_pb2

from .cursor import format_event_id

SEP = "\n"
TRADE = "trade"
QUOTE = "quote"


@dataclass(frozen=True, slots=True)
class EncodedTick:
    """One tick ready to send: ``frame`` is the complete SSE event (``event``, ``id``, ``data``);
    ``ingest_ns`` is when the feed accepted it (ns since the Unix epoch), for latency metrics."""

    offset: int
    symbol: str
    kind: str  # TRADE or QUOTE
    frame: bytes
    ingest_ns: int


def _json(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True)


def encode_tick(tick: tick_pb2.Tick, epoch: str) -> EncodedTick:
    """The SSE event of ``tick``: ``event: trade|quote``, ``id: <epoch>-<offset>``, JSON data."""
    kind = TRADE if tick.HasField("trade") else QUOTE
    data = _json(json_format.MessageToDict(tick))
    frame = ServerSentEvent(
        data=data, event=kind, id=format_event_id(epoch, tick.offset), sep=SEP
    ).encode()
    return EncodedTick(tick.offset, tick.symbol, kind, frame, tick.ingest_time.ToNanoseconds())


def snapshot_frame(tick: EncodedTick) -> bytes:
    """The tick's event without its ``id`` line: a snapshot value, not a point in the stream.

    EventSource keeps its last event ID across an event without ``id`` (WHATWG "Server-sent
    events", event stream interpretation), so snapshots never move a client's resume cursor.
    """
    assert tick.frame.startswith(b"id: ")
    return tick.frame[tick.frame.index(b"\n") + 1 :]


def encode_status(status: feed_pb2.SymbolStatus) -> bytes:
    """The ``status`` event of a symbol's state change, without ``id`` (not a position):
    ``data: {"symbol", "state": "stale"|"live", "lastTickTime"}`` (RFC 3339, omitted when the
    symbol never had a tick)."""
    payload: dict[str, Any] = {
        "symbol": status.symbol,
        "state": "stale" if status.state == feed_pb2.SYMBOL_STATE_STALE else "live",
    }
    if status.HasField("last_tick_time"):
        payload["lastTickTime"] = status.last_tick_time.ToJsonString()
    return encode_control("status", payload)


def encode_control(
    event: str, payload: dict[str, Any], event_id: str | None = None, retry_ms: int | None = None
) -> bytes:
    """A control event (``reset``, ``disconnect``) with a one-line JSON ``data``."""
    return ServerSentEvent(
        data=_json(payload), event=event, id=event_id, retry=retry_ms, sep=SEP
    ).encode()


def encode_preamble(retry_ms: int) -> bytes:
    """The stream's first bytes: a comment and the ``retry:`` reconnection hint."""
    return ServerSentEvent(comment="tickstream", retry=retry_ms, sep=SEP).encode()
