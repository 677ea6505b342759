"""Tick drafts to publish: built from Python values or JSON-shaped dicts, checked before sending.

The checks are the feed's (``feed_service/ingest.py``): a tick that would make the feed reject
its whole batch is refused here with ValueError, before it joins a batch with others.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeAlias

from google.protobuf import json_format
from tickstream.v1 import ingest_pb2, tick_pb2

SYMBOL_PATTERN = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,31}")
DECIMAL_PATTERN = re.compile(r"[0-9]{1,40}(\.[0-9]{1,40})?")
MAX_ID_LENGTH = 128
TRADE_DECIMALS = ("price", "size")
QUOTE_DECIMALS = ("bid_price", "bid_size", "ask_price", "ask_size")
SIDES = {"buy": tick_pb2.SIDE_BUY, "sell": tick_pb2.SIDE_SELL, "": tick_pb2.SIDE_UNSPECIFIED}

Number: TypeAlias = str | Decimal | int
"""A price or size: a decimal string such as ``"189.2500"``, a Decimal or an int; never a
float (binary floats cannot carry the digits recorded)."""
TimeLike: TypeAlias = datetime | int | str | None
"""An event time: an aware datetime, ns since the Unix epoch (int), an RFC 3339 string, or
None for "now" (the feed's ingest time)."""


def _decimal(name: str, value: Number) -> str:
    if isinstance(value, bool) or not isinstance(value, str | Decimal | int):
        raise ValueError(f"{name}: pass a decimal string, Decimal or int, not {value!r}")
    return value if isinstance(value, str) else format(Decimal(value), "f")


def _set_time(draft: ingest_pb2.TickDraft, event_time: TimeLike) -> None:
    if event_time is None:
        return
    if isinstance(event_time, datetime):
        if event_time.tzinfo is None:
            raise ValueError("event_time: a naive datetime is ambiguous; give it a tzinfo")
        draft.event_time.FromDatetime(event_time)
    elif isinstance(event_time, int):
        draft.event_time.FromNanoseconds(event_time)
    else:
        try:
            draft.event_time.FromJsonString(event_time)
        except ValueError as error:
            raise ValueError(f"event_time: {event_time!r} is not RFC 3339 ({error})") from None


def trade(
    symbol: str,
    price: Number,
    size: Number,
    *,
    trade_id: str = "",
    side: str | None = None,
    event_time: TimeLike = None,
    dedup_id: str = "",
) -> ingest_pb2.TickDraft:
    """A trade draft. ``side``: ``"buy"``/``"sell"`` (the aggressor) or None. Raises
    ValueError for a malformed value (see :func:`check_draft`)."""
    if (side or "").lower() not in SIDES:
        raise ValueError(f"side: {side!r} is not buy, sell or None")
    draft = ingest_pb2.TickDraft(symbol=symbol, dedup_id=dedup_id)
    body = draft.trade
    body.price, body.size = _decimal("price", price), _decimal("size", size)
    body.trade_id, body.side = trade_id, SIDES[(side or "").lower()]
    _set_time(draft, event_time)
    check_draft(draft)
    return draft


def quote(
    symbol: str,
    bid_price: Number,
    bid_size: Number,
    ask_price: Number,
    ask_size: Number,
    *,
    event_time: TimeLike = None,
    dedup_id: str = "",
) -> ingest_pb2.TickDraft:
    """A best bid/ask draft (bid not above ask). Raises ValueError for a malformed value."""
    draft = ingest_pb2.TickDraft(symbol=symbol, dedup_id=dedup_id)
    body = draft.quote
    body.bid_price, body.bid_size = _decimal("bid_price", bid_price), _decimal("bid_size", bid_size)
    body.ask_price, body.ask_size = _decimal("ask_price", ask_price), _decimal("ask_size", ask_size)
    _set_time(draft, event_time)
    check_draft(draft)
    return draft


def draft_from(tick: ingest_pb2.TickDraft | Mapping[str, Any]) -> ingest_pb2.TickDraft:
    """A checked copy of ``tick``: a ``TickDraft``, or its proto3 JSON form as a dict, e.g.
    ``{"symbol": "ACME", "eventTime": "2024-08-08T23:54:20.816Z", "dedupId": "7",
    "trade": {"price": "10.5", "size": "3", "tradeId": "7", "side": "SIDE_BUY"}}`` (snake_case
    keys are accepted too). Raises ValueError naming what is wrong."""
    draft = ingest_pb2.TickDraft()
    if isinstance(tick, ingest_pb2.TickDraft):
        draft.CopyFrom(tick)
    else:
        try:
            json_format.ParseDict(tick, draft)
        except json_format.ParseError as error:
            raise ValueError(f"not a TickDraft: {error}") from None
    check_draft(draft)
    return draft


def _check_book(book: tick_pb2.BookUpdate) -> None:
    """A book update's levels: decimal strings, no zero size in a snapshot."""
    for side in ("bids", "asks"):
        for number, level in enumerate(getattr(book, side)):
            for name in ("price", "size"):
                value = getattr(level, name)
                if not DECIMAL_PATTERN.fullmatch(value):
                    where = f"book.{side}[{number}].{name}"
                    raise ValueError(f"{where}: {value[:40]!r} is not a decimal string")
            if book.snapshot and not level.size.strip("0."):
                raise ValueError(f"book.{side}[{number}].size: 0 in a snapshot")


def check_draft(draft: ingest_pb2.TickDraft) -> None:
    """Raise ValueError naming the first field the feed would reject: the symbol (upper case,
    1-32 of ``A-Z 0-9 . _ -``), a missing body, decimals (``^[0-9]+(\\.[0-9]+)?$``), a bid
    above its ask, ids over 128 bytes (UTF-8)."""
    if not SYMBOL_PATTERN.fullmatch(draft.symbol):
        raise ValueError(f"symbol: {draft.symbol[:40]!r} does not match {SYMBOL_PATTERN.pattern}")
    body_name = draft.WhichOneof("body")
    if body_name is None:
        raise ValueError("body: set trade, quote or book")
    if body_name == "book":
        _check_book(draft.book)
        body_name = ""  # no trade or quote fields to check
    body = getattr(draft, body_name) if body_name else None
    names = TRADE_DECIMALS if body_name == "trade" else QUOTE_DECIMALS if body_name else ()
    for name in names:
        value = getattr(body, name)
        if not DECIMAL_PATTERN.fullmatch(value):
            raise ValueError(f"{body_name}.{name}: {value[:40]!r} is not a decimal string")
    if body_name == "quote" and Decimal(body.bid_price) > Decimal(body.ask_price):
        raise ValueError(f"quote.bid_price: {body.bid_price} is above ask_price {body.ask_price}")
    if body_name == "trade" and len(body.trade_id.encode()) > MAX_ID_LENGTH:
        raise ValueError(f"trade.trade_id: over {MAX_ID_LENGTH} bytes (UTF-8)")
    if len(draft.dedup_id.encode()) > MAX_ID_LENGTH:
        raise ValueError(f"dedup_id: over {MAX_ID_LENGTH} bytes (UTF-8)")
