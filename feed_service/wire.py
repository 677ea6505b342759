"""Ticks encoded once for every subscriber: the protobuf wire bytes of ``SubscribeResponse``.

A ``TickBatch`` on the wire is its ``ticks`` entries (tag, length, ``Tick`` bytes) followed by
``head_offset``; a ``SubscribeResponse`` carrying it is a tag, a length and those bytes
(protobuf encoding guide, "Length-delimited records" and "Last one wins" for field order). So
each tick is serialized once, when it is published, as its ``TickBatch.ticks`` entry, and a
response to any subscriber is a join of stored bytes: no per-subscriber copy or serialization.
"""

from __future__ import annotations

from dataclasses import dataclass

from tickstream.v1 import feed_pb2, tick_pb2

# Field keys taken from protobuf itself: an empty TickBatch inside a SubscribeResponse is
# (key, length 0); a TickBatch holding one empty Tick is (key, length 0).
_RESPONSE_TICKS_KEY = feed_pb2.SubscribeResponse(ticks=feed_pb2.TickBatch()).SerializeToString()
_RESPONSE_TICKS_KEY = _RESPONSE_TICKS_KEY[:-1]
_BATCH_TICK_KEY = feed_pb2.TickBatch(ticks=[tick_pb2.Tick()]).SerializeToString()[:-1]


def varint(value: int) -> bytes:
    """``value`` (>= 0) as a protobuf base-128 varint: 7 bits a byte, low bits first."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class StoredTick:
    """A published tick: its message (for snapshots and tests), the fields subscribers filter
    on as plain values, and ``entry``, its bytes as one ``TickBatch.ticks`` element."""

    offset: int
    symbol: str
    tick_type: int  # tick_pb2.TICK_TYPE_TRADE or TICK_TYPE_QUOTE
    tick: tick_pb2.Tick
    entry: bytes

    @classmethod
    def of(cls, tick: tick_pb2.Tick, tick_type: int) -> StoredTick:
        body = tick.SerializeToString()
        entry = _BATCH_TICK_KEY + varint(len(body)) + body
        return cls(tick.offset, tick.symbol, tick_type, tick, entry)


def tick_batch_response(ticks: list[StoredTick], head_offset: int) -> bytes:
    """The serialized ``SubscribeResponse{ticks: TickBatch{ticks, head_offset}}``."""
    batch = b"".join([t.entry for t in ticks])
    if head_offset:
        batch += feed_pb2.TickBatch(head_offset=head_offset).SerializeToString()
    return _RESPONSE_TICKS_KEY + varint(len(batch)) + batch


def serialize_response(response: feed_pb2.SubscribeResponse | bytes) -> bytes:
    """gRPC response serializer for Subscribe: messages are serialized, bytes already are."""
    return response if isinstance(response, bytes) else response.SerializeToString()
