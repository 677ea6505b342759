"""Ticks and control messages to SSE bytes, each encoded once and shared by every client.

Framing follows the WHATWG HTML standard, section "Server-sent events" (9.2), through
sse-starlette's ``ServerSentEvent``; ``data`` is one line of JSON, the proto3 JSON mapping of a
``tickstream.v1.Tick`` (prices and sizes as decimal strings, uint64 fields as strings). Ticks,
the hot path, are written by hand to the same bytes (:func:`encode_tick`, figures beside it).
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from json.encoder import encode_basestring_ascii
from typing import Any

from google.protobuf import json_format
from sse_starlette import ServerSentEvent
from tickstream.v1 import feed_pb2, tick_pb2

from tickstream_common.book import Level, OrderBook

from .cursor import format_event_id

SEP = "\n"
TRADE = "trade"
QUOTE = "quote"
BOOK = "book"
BOOK_KIND = "book:"
"""An encoded book event's ``kind`` is ``book:<depth>``: the top ``depth`` levels a side."""


BAR = "bar"
BAR_KIND = "bar:"
FINAL = ":final"
"""A bar event's ``kind`` is ``bar:<interval>`` while the bar is open (it conflates: latest
wins) and ``bar:<interval>:final`` once closed (never dropped, like trades)."""


def book_kind(depth: int) -> str:
    """The ``kind`` of book events of ``depth`` levels a side."""
    return f"{BOOK_KIND}{depth}"


def bar_kinds(interval: str) -> tuple[str, str]:
    """The kinds of ``interval``'s bar events: (open, final)."""
    return f"{BAR_KIND}{interval}", f"{BAR_KIND}{interval}{FINAL}"


def conflates(kind: str) -> bool:
    """Whether a newer event of ``kind`` (and symbol) may replace a queued one: quotes, books
    and open bars; never trades or final bars."""
    return kind != TRADE and not kind.endswith(FINAL)


@dataclass(frozen=True, slots=True)
class EncodedTick:
    """One tick ready to send: ``frame`` is the complete SSE event (``event``, ``id``, ``data``);
    ``ingest_ns`` is when the feed accepted it (ns since the Unix epoch), for latency metrics."""

    offset: int
    symbol: str
    kind: str  # TRADE, QUOTE, book_kind(depth), or BOOK for an update not encoded yet
    frame: bytes
    ingest_ns: int


def _json(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True)


def encode_tick_reference(tick: tick_pb2.Tick, epoch: str) -> EncodedTick:
    """:func:`encode_tick` through the libraries (json_format, json, sse-starlette): what the
    bytes are defined to be, at 15-40 us a tick. :func:`encode_tick` falls back to it for input
    it does not handle (a Timestamp out of protobuf's range: this raises); tests compare both."""
    kind = TRADE if tick.HasField("trade") else QUOTE
    data = _json(json_format.MessageToDict(tick))
    frame = ServerSentEvent(
        data=data, event=kind, id=format_event_id(epoch, tick.offset), sep=SEP
    ).encode()
    return EncodedTick(tick.offset, tick.symbol, kind, frame, tick.ingest_time.ToNanoseconds())


# ----- the per-tick fast path ------------------------------------------------------------------
# Written by hand, not through the libraries, because they stand in the way of a measured
# target: a producer at 200,000 ticks/s must reach an SSE client on this 2-core machine, and
# MessageToDict + json.dumps + ServerSentEvent.encode cost 15-20 us a tick on a quiet machine
# (the edge alone could not pass ~50,000 ticks/s). bench/encode_ticks.py, 20,000 recorded ticks
# (3,865 trades), 2 CPUs busy with other work (load 2-3.5), Python 3.11, protobuf 7.36 upb,
# three runs: library (encode_tick_reference) 30.9-36.0 us/tick, encode_tick 4.6-5.1 us/tick:
# 6.6-7.2 times faster (not timed on a quiet machine; by the same ratio about 2.5-3 us).
# About half of what is left is reading the protobuf fields (2.2 us for the 14 reads a tick).
# The bytes are the library's, checked by tests/unit/test_encoding.py (property-based over
# arbitrary ticks, and every tick of the recording): the proto3 JSON mapping in field-number
# order, fields at their default omitted, uint64 as strings, enums by name (an unknown number
# as a JSON number), strings escaped by ``json``'s own ASCII escaper (what json.dumps calls).

_TIMESTAMP_MIN_S = -62_135_596_800  # 0001-01-01T00:00:00Z, protobuf Timestamp's range
_TIMESTAMP_MAX_S = 253_402_300_799  # 9999-12-31T23:59:59Z
_NS_PER_S = 1_000_000_000
_UNIX_EPOCH = datetime.datetime(1970, 1, 1)
_CACHED = 4096  # entries per cache below; a full cache is emptied
_second_texts: dict[int, str] = {}  # seconds since the epoch -> '"YYYY-MM-DDTHH:MM:SS'
_ingest_texts: dict[int, str] = {}  # ns since the epoch -> JSON text; a batch shares one
_SIDES = {  # every Side but SIDE_UNSPECIFIED (0: the default, omitted) -> JSON text
    side.number: f'"{side.name}"' for side in tick_pb2.Side.DESCRIPTOR.values if side.number
}
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")  # what sse-starlette removes from an ``id``
_quoted = encode_basestring_ascii  # json.dumps(ensure_ascii=True)'s string escaper


class _Unhandled(Exception):
    """Input the fast path leaves to :func:`encode_tick_reference` (which raises for it)."""


def _timestamp_json(seconds: int, nanos: int) -> str:
    """A ``google.protobuf.Timestamp`` as ``Timestamp.ToJsonString`` renders it, in quotes:
    ``"2024-08-08T23:54:15.342Z"``, with 0, 3, 6 or 9 fraction digits (the fewest exact).

    Each second's date and time is formatted once, with protobuf's own datetime arithmetic (so
    years below 1000 keep 4 digits), and cached. Raises _Unhandled outside protobuf's range.
    """
    text = _second_texts.get(seconds)
    if text is None:
        if not _TIMESTAMP_MIN_S <= seconds <= _TIMESTAMP_MAX_S:
            raise _Unhandled
        if len(_second_texts) >= _CACHED:
            _second_texts.clear()
        text = '"' + (_UNIX_EPOCH + datetime.timedelta(seconds=seconds)).isoformat()
        _second_texts[seconds] = text
    if not 0 <= nanos < _NS_PER_S:
        raise _Unhandled
    # str(n + 10**k)[1:] is n in k digits with leading zeros (faster than f"{n:0kd}" here).
    if nanos % 1_000:
        return text + "." + str(nanos + _NS_PER_S)[1:] + 'Z"'
    if nanos % 1_000_000:
        return text + "." + str(nanos // 1_000 + 1_000_000)[1:] + 'Z"'
    if nanos:
        return text + "." + str(nanos // 1_000_000 + 1_000)[1:] + 'Z"'
    return text + 'Z"'


def _ingest_json(seconds: int, nanos: int) -> str:
    """:func:`_timestamp_json` of an ``ingest_time``, cached: the feed stamps a batch alike."""
    if not 0 <= nanos < _NS_PER_S:
        raise _Unhandled
    key = seconds * _NS_PER_S + nanos
    text = _ingest_texts.get(key)
    if text is None:
        text = _timestamp_json(seconds, nanos)
        if len(_ingest_texts) >= _CACHED:
            _ingest_texts.clear()
        _ingest_texts[key] = text
    return text


@lru_cache(maxsize=64)
def _id_prefix(epoch: str) -> str:
    """``id: <epoch>-``, line breaks removed as sse-starlette removes them."""
    return "id: " + _LINE_BREAKS.sub("", epoch) + "-"


_set_offset, _set_symbol, _set_kind, _set_frame, _set_ingest_ns = (
    EncodedTick.offset.__set__,  # type: ignore[attr-defined]
    EncodedTick.symbol.__set__,  # type: ignore[attr-defined]
    EncodedTick.kind.__set__,  # type: ignore[attr-defined]
    EncodedTick.frame.__set__,  # type: ignore[attr-defined]
    EncodedTick.ingest_ns.__set__,  # type: ignore[attr-defined]
)


def _encoded_tick(offset: int, symbol: str, kind: str, frame: bytes, ingest_ns: int) -> EncodedTick:
    """``EncodedTick(...)`` in half the time: the slots are filled directly, where the frozen
    dataclass's ``__init__`` goes through ``object.__setattr__`` (0.5 against 0.9 us here)."""
    encoded: EncodedTick = object.__new__(EncodedTick)
    _set_offset(encoded, offset)
    _set_symbol(encoded, symbol)
    _set_kind(encoded, kind)
    _set_frame(encoded, frame)
    _set_ingest_ns(encoded, ingest_ns)
    return encoded


def encode_tick(tick: tick_pb2.Tick, epoch: str) -> EncodedTick:
    """The SSE event of ``tick``: ``id: <epoch>-<offset>``, ``event: trade|quote`` and ``data``,
    the tick's proto3 JSON mapping on one line; each line ends in LF, then a blank line.

    Byte for byte :func:`encode_tick_reference` (a tick with neither body is a ``quote`` event
    with no body in its data). This handles a tick with every field set, as the feed sends
    them; :func:`_encode_sparse` any other. Raises as the reference does for a Timestamp
    outside protobuf's range (ValueError or json_format.SerializeToJsonError).
    """
    symbol, sequence, offset = tick.symbol, tick.sequence, tick.offset
    event_time, ingest_time = tick.event_time, tick.ingest_time
    event_s, event_nanos = event_time.seconds, event_time.nanos
    ingest_s, ingest_nanos = ingest_time.seconds, ingest_time.nanos
    # A set Timestamp may read (0, 0) (the epoch itself): left to the sparse path, which asks.
    if not (symbol and sequence and offset and (event_s or event_nanos)):
        return _encode_sparse(tick, epoch)
    if not (ingest_s or ingest_nanos):
        return _encode_sparse(tick, epoch)
    kind = tick.WhichOneof("body")
    if kind == QUOTE:
        body = tick.quote
        bid_price, bid_size = body.bid_price, body.bid_size
        ask_price, ask_size = body.ask_price, body.ask_size
        if not (bid_price and bid_size and ask_price and ask_size):
            return _encode_sparse(tick, epoch)
        body_json = (
            f'"quote":{{"bidPrice":{_quoted(bid_price)},"bidSize":{_quoted(bid_size)},'
            f'"askPrice":{_quoted(ask_price)},"askSize":{_quoted(ask_size)}}}'
        )
    elif kind == TRADE:
        trade = tick.trade
        price, size, trade_id, side = trade.price, trade.size, trade.trade_id, trade.side
        if not (price and size and trade_id and side in _SIDES):
            return _encode_sparse(tick, epoch)
        body_json = (
            f'"trade":{{"price":{_quoted(price)},"size":{_quoted(size)},'
            f'"tradeId":{_quoted(trade_id)},"side":{_SIDES[side]}}}'
        )
    elif kind == BOOK:  # encoded per depth, once applied to the book (encode_book)
        return _encoded_tick(offset, symbol, BOOK, b"", ingest_s * _NS_PER_S + ingest_nanos)
    elif kind == BAR:
        return encode_bar(tick, epoch)
    else:
        return _encode_sparse(tick, epoch)
    try:
        stamps = _timestamp_json(event_s, event_nanos) + ',"ingestTime":'
        stamps += _ingest_json(ingest_s, ingest_nanos)
    except _Unhandled:
        return encode_tick_reference(tick, epoch)
    frame = (
        f'{_id_prefix(epoch)}{offset}\nevent: {kind}\ndata: {{"symbol":{_quoted(symbol)},'
        f'"sequence":"{sequence}","offset":"{offset}","eventTime":{stamps},{body_json}}}\n\n'
    )
    return _encoded_tick(offset, symbol, kind, frame.encode(), ingest_s * _NS_PER_S + ingest_nanos)


def _trade_fields(trade: tick_pb2.Trade) -> str:
    """The members of ``"trade":{...}`` that are not at their default."""
    fields = []
    if value := trade.price:
        fields.append('"price":' + _quoted(value))
    if value := trade.size:
        fields.append('"size":' + _quoted(value))
    if value := trade.trade_id:
        fields.append('"tradeId":' + _quoted(value))
    if side := trade.side:
        fields.append('"side":' + (_SIDES.get(side) or str(side)))
    return ",".join(fields)


def _quote_fields(book: tick_pb2.Quote) -> str:
    """The members of ``"quote":{...}`` that are not at their default."""
    fields = []
    if value := book.bid_price:
        fields.append('"bidPrice":' + _quoted(value))
    if value := book.bid_size:
        fields.append('"bidSize":' + _quoted(value))
    if value := book.ask_price:
        fields.append('"askPrice":' + _quoted(value))
    if value := book.ask_size:
        fields.append('"askSize":' + _quoted(value))
    return ",".join(fields)


def _header_fields(tick: tick_pb2.Tick) -> tuple[list[str], int]:
    """The JSON members of ``tick``'s fields before its body that are set, and its ingest time
    (ns since the epoch, 0 when unset). Raises _Unhandled for a Timestamp out of range."""
    fields = []
    if symbol := tick.symbol:
        fields.append('"symbol":' + _quoted(symbol))
    if sequence := tick.sequence:
        fields.append(f'"sequence":"{sequence}"')
    if offset := tick.offset:
        fields.append(f'"offset":"{offset}"')
    ingest_ns = 0
    if tick.HasField("event_time"):
        stamp = tick.event_time
        fields.append('"eventTime":' + _timestamp_json(stamp.seconds, stamp.nanos))
    if tick.HasField("ingest_time"):
        stamp = tick.ingest_time
        fields.append('"ingestTime":' + _timestamp_json(stamp.seconds, stamp.nanos))
        ingest_ns = stamp.seconds * _NS_PER_S + stamp.nanos
    return fields, ingest_ns


def _encode_sparse(tick: tick_pb2.Tick, epoch: str) -> EncodedTick:
    """:func:`encode_tick` of any tick: each field written only when set (as MessageToDict does:
    scalars when not at their default, Timestamps and the body when present)."""
    try:
        fields, ingest_ns = _header_fields(tick)
    except _Unhandled:
        return encode_tick_reference(tick, epoch)
    symbol, offset = tick.symbol, tick.offset
    body = tick.WhichOneof("body")
    if body == TRADE:
        fields.append('"trade":{' + _trade_fields(tick.trade) + "}")
    elif body == QUOTE:
        fields.append('"quote":{' + _quote_fields(tick.quote) + "}")
    kind = TRADE if body == TRADE else QUOTE
    frame = f"{_id_prefix(epoch)}{offset}\nevent: {kind}\ndata: {{{','.join(fields)}}}\n\n"
    return _encoded_tick(offset, symbol, kind, frame.encode(), ingest_ns)


def encode_bar(tick: tick_pb2.Tick, epoch: str) -> EncodedTick:
    """The ``bar`` event of a bar tick: the tick's proto3 JSON mapping (json_format: a few bars
    a second per symbol, off the hot path). Its kind is one of ``bar_kinds(interval)``."""
    bar = tick.bar
    kind = bar_kinds(bar.interval)[1 if bar.final else 0]
    data = _json(json_format.MessageToDict(tick))
    frame = f"{_id_prefix(epoch)}{tick.offset}\nevent: bar\ndata: {data}\n\n"
    ingest_ns = tick.ingest_time.ToNanoseconds() if tick.HasField("ingest_time") else 0
    return _encoded_tick(tick.offset, tick.symbol, kind, frame.encode(), ingest_ns)


def _levels_json(levels: list[Level]) -> str:
    return ",".join(f'{{"price":{_quoted(p)},"size":{_quoted(s)}}}' for p, s in levels)


def encode_book(tick: tick_pb2.Tick, book: OrderBook, depth: int, epoch: str) -> EncodedTick:
    """The ``book`` event of ``tick``, a book update already applied to ``book``: the tick's
    proto3 JSON with its body the top ``depth`` levels a side after the update, as a snapshot
    (``{"bids": [{"price", "size"}...], "asks": [...], "snapshot": true, "firstUpdateId",
    "lastUpdateId"}``, bids descending and asks ascending by price, ``bids``/``asks`` present
    even when empty, update ids the book's last as strings when the source gives them). Its
    kind is ``book_kind(depth)``. Raises ValueError for a Timestamp out of protobuf's range."""
    try:
        fields, ingest_ns = _header_fields(tick)
    except _Unhandled:
        raise ValueError("a book tick's timestamp is outside protobuf's range") from None
    bids, asks = book.top(depth)
    body = f'"bids":[{_levels_json(bids)}],"asks":[{_levels_json(asks)}],"snapshot":true'
    if update_id := book.last_update_id:
        body += f',"firstUpdateId":"{update_id}","lastUpdateId":"{update_id}"'
    fields.append('"book":{' + body + "}")
    offset = tick.offset
    frame = f"{_id_prefix(epoch)}{offset}\nevent: book\ndata: {{{','.join(fields)}}}\n\n"
    return _encoded_tick(offset, tick.symbol, book_kind(depth), frame.encode(), ingest_ns)


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


@lru_cache(maxsize=8)
@lru_cache(maxsize=4)
def encode_preamble(retry_ms: int) -> bytes:
    """The stream's first bytes: a comment and the ``retry:`` reconnection hint."""
    return ServerSentEvent(comment="tickstream", retry=retry_ms, sep=SEP).encode()
