"""Ticks encoded once for every subscriber: the protobuf wire bytes of ``SubscribeResponse``.

The feed also builds each tick's bytes itself: a ``TickDraft`` carries Tick's field numbers, so a
tick is the draft's bytes plus its sequence, offset and times (see ``StoredTick.of_draft``):
building a ``Tick`` message and serializing it cost about 5 µs a tick, most of the ingest budget.

A ``TickBatch`` on the wire is its ``ticks`` entries (tag, length, ``Tick`` bytes) followed by
``head_offset``; a ``SubscribeResponse`` carrying it is a tag, a length and those bytes
(protobuf encoding guide, "Length-delimited records" and "Last one wins" for field order). So
each tick is serialized once, when it is published, as its ``TickBatch.ticks`` entry, and a
response to any subscriber is a join of stored bytes: no per-subscriber copy or serialization.
"""

from __future__ import annotations

from typing import NamedTuple

from google.protobuf import timestamp_pb2
from tickstream.v1 import feed_pb2, tick_pb2

# Field keys taken from protobuf itself: an empty TickBatch inside a SubscribeResponse is
# (key, length 0); a TickBatch holding one empty Tick is (key, length 0).
_RESPONSE_TICKS_KEY = feed_pb2.SubscribeResponse(ticks=feed_pb2.TickBatch()).SerializeToString()
_RESPONSE_TICKS_KEY = _RESPONSE_TICKS_KEY[:-1]
_BATCH_TICK_KEY = feed_pb2.TickBatch(ticks=[tick_pb2.Tick()]).SerializeToString()[:-1]


def _varint_slow(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = [_varint_slow(value) for value in range(1 << 14)]  # 1 and 2 bytes: 16,384


def varint(value: int) -> bytes:
    """``value`` (>= 0) as a protobuf base-128 varint: 7 bits a byte, low bits first.

    Three per stored tick (sequence, offset, length): a table for values below 2**14 and
    unrolled 3- and 4-byte forms take it from about 2 µs to 0.2 µs a tick.
    """
    if value < 16_384:
        return _SMALL_VARINTS[value]
    if value < 2_097_152:
        return bytes(((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, value >> 14))
    if value < 268_435_456:
        return bytes(
            (
                (value & 0x7F) | 0x80,
                ((value >> 7) & 0x7F) | 0x80,
                ((value >> 14) & 0x7F) | 0x80,
                value >> 21,
            )
        )
    return _varint_slow(value)


# Keys of the Tick fields the feed adds to a draft's bytes (tick.proto): sequence (2, varint),
# offset (3, varint), event_time (4) and ingest_time (5) (length-delimited Timestamps).
_SEQUENCE_KEY = b"\x10"
_OFFSET_KEY = b"\x18"
_EVENT_TIME_KEY = b"\x22"
_INGEST_TIME_KEY = b"\x2a"


def timestamp_field(key: bytes, ns: int) -> bytes:
    """A Timestamp field (``key`` then the length-delimited message) for ``ns`` since the epoch."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(ns)
    body = stamp.SerializeToString()
    return key + varint(len(body)) + body


def ingest_time_field(ns: int) -> bytes:
    return timestamp_field(_INGEST_TIME_KEY, ns)


def event_time_field(ns: int) -> bytes:
    return timestamp_field(_EVENT_TIME_KEY, ns)


DRAFT_TYPES = {
    "trade": tick_pb2.TICK_TYPE_TRADE,
    "quote": tick_pb2.TICK_TYPE_QUOTE,
    "book": tick_pb2.TICK_TYPE_BOOK,
    "bar": tick_pb2.TICK_TYPE_BAR,
}
"""A ``TickDraft``'s body (``WhichOneof("body")``) -> the type of the tick it makes."""


class StoredTick(NamedTuple):
    """A published tick: the fields subscribers filter on as plain values, and ``entry``, its
    bytes as one ``TickBatch.ticks`` element (``body_at``: where the Tick's own bytes start).
    ``tick`` parses them back (snapshots of messages, tests). A named tuple: one is made per
    stored tick, and it is made in a third of a frozen dataclass's time."""

    offset: int
    symbol: str
    tick_type: int  # a tick_pb2.TickType
    entry: bytes
    body_at: int

    @property
    def tick(self) -> tick_pb2.Tick:
        return tick_pb2.Tick.FromString(self.entry[self.body_at :])

    @classmethod
    def of(cls, tick: tick_pb2.Tick, tick_type: int) -> StoredTick:
        """From a ``Tick`` message (tests and tools; the hub stores drafts' bytes)."""
        return cls.of_body(tick.offset, tick.symbol, tick_type, tick.SerializeToString())

    @classmethod
    def of_body(cls, offset: int, symbol: str, tick_type: int, body: bytes) -> StoredTick:
        """From a serialized ``Tick`` (fields in any order, as protobuf allows)."""
        head = _BATCH_TICK_KEY + varint(len(body))
        return cls(offset, symbol, tick_type, head + body, len(head))

    @classmethod
    def of_draft(
        cls,
        draft_bytes: bytes,
        symbol: str,
        tick_type: int,
        sequence: int,
        offset: int,
        time_fields: bytes,
    ) -> StoredTick:
        """The tick made of a ``TickDraft``'s bytes (its fields have Tick's numbers; the caller
        cleared ``dedup_id``) followed by its numbers and ``time_fields`` (ingest_time, plus
        event_time when the draft has none)."""
        body = (
            draft_bytes
            + _SEQUENCE_KEY
            + varint(sequence)
            + _OFFSET_KEY
            + varint(offset)
            + time_fields
        )
        return cls.of_body(offset, symbol, tick_type, body)


def tick_batch_response(ticks: list[StoredTick], head_offset: int) -> bytes:
    """The serialized ``SubscribeResponse{ticks: TickBatch{ticks, head_offset}}``."""
    batch = b"".join([t.entry for t in ticks])
    if head_offset:
        batch += feed_pb2.TickBatch(head_offset=head_offset).SerializeToString()
    return _RESPONSE_TICKS_KEY + varint(len(batch)) + batch


def serialize_response(response: feed_pb2.SubscribeResponse | bytes) -> bytes:
    """gRPC response serializer for Subscribe: messages are serialized, bytes already are."""
    return response if isinstance(response, bytes) else response.SerializeToString()
