"""Chart data as JSON, for a page's first paint and for clients that poll.

``GET /latest?symbols=A,B``: each symbol's latest trade, quote, book (top ``depth`` levels) and
bars, from one ``Subscribe(snapshot)`` read to its first batch.

``GET /bars/{symbol}``: a symbol's recent bars.

The bars come from the feed's history (no database): one ``Subscribe(earliest, types=[BAR])``
read up to the head the feed had when it opened, then cancelled. The reply's ``lastEventId`` is
that head as an SSE cursor: a client that opens ``/sse/{symbol}?types=bar`` with it as
``last_event_id`` gets every bar after the ones it painted, none twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from tickstream.v1 import feed_pb2, feed_pb2_grpc, tick_pb2

from tickstream_common.book import OrderBook

from .auth import authorize
from .cursor import format_event_id
from .params import check_known, parse_depth, parse_symbols
from .problems import Problem
from .reader import FeedEvent, Opened, Progress, Reset, SubscribeReader, Ticks
from .state import RETRY_AFTER_S, EdgeState, edge_state
from .streams import STREAM_PROBLEMS, require_known
from .upstream import UPSTREAM_TYPES

DEFAULT_LIMIT = 500
MAX_LIMIT = 5_000
READ_TIMEOUT_S = 10.0
BAR_PARAMETERS = frozenset(("interval", "limit", "token"))

router = APIRouter()
Edge = Annotated[EdgeState, Depends(edge_state)]
PROBLEMS = {status: STREAM_PROBLEMS[status] for status in (400, 401, 403, 404, 503)}


LATEST_PARAMETERS = frozenset(("symbols", "depth", "token"))


@router.get(
    "/latest",
    summary="Latest trade, quote, book and bars of symbols",
    description="`{epoch, lastEventId, symbols: {SYMBOL: {trade, quote, book, bars: "
    "{INTERVAL: bar}}}}`: each value the proto3 JSON of the latest tick of its kind (as the "
    "SSE `data`; a book holds the top `depth` levels a side, default 10), absent when the "
    "symbol has none. `lastEventId` resumes an SSE stream right after these values.",
    responses=PROBLEMS,
)
async def latest(request: Request, edge: Edge) -> JSONResponse:
    query = request.query_params
    check_known(query.keys(), LATEST_PARAMETERS)
    symbols = parse_symbols(query.getlist("symbols"), edge.settings.max_symbols)
    depth = parse_depth(query.get("depth"))
    if edge.verifier is not None:
        authorize(edge.verifier, request, symbols)
    edge.require_ready()
    await require_known(edge, symbols)
    try:
        epoch, head, ticks = await read_latest(edge.feed.stub, symbols)
    except (grpc.aio.AioRpcError, TimeoutError) as error:
        raise _unavailable(error) from None
    values: dict[str, dict[str, Any]] = {symbol: {} for symbol in symbols}
    for tick in ticks:
        kind, value = _latest_value(tick, depth)
        if kind == "bar":
            values[tick.symbol].setdefault("bars", {})[tick.bar.interval] = value
        else:
            values[tick.symbol][kind] = value
    return JSONResponse(
        {"epoch": epoch, "lastEventId": format_event_id(epoch, head), "symbols": values}
    )


def _latest_value(tick: tick_pb2.Tick, depth: int) -> tuple[str, dict[str, Any]]:
    """(kind, proto3 JSON) of one snapshot tick; a book cut to ``depth`` levels a side."""
    kind = str(tick.WhichOneof("body"))
    if kind == "book":
        book = OrderBook()
        book.apply(tick.book)
        bids, asks = book.top(depth)
        del tick.book.bids[:], tick.book.asks[:]
        tick.book.bids.extend(tick_pb2.BookLevel(price=p, size=s) for p, s in bids)
        tick.book.asks.extend(tick_pb2.BookLevel(price=p, size=s) for p, s in asks)
    return kind, json_format.MessageToDict(tick)


async def read_latest(
    stub: feed_pb2_grpc.FeedServiceStub, symbols: list[str]
) -> tuple[str, int, list[tick_pb2.Tick]]:
    """(epoch, head, the snapshot's ticks) of a live Subscribe with ``snapshot``, every type."""
    request = feed_pb2.SubscribeRequest(symbols=symbols, types=UPSTREAM_TYPES, snapshot=True)
    epoch, head = "", 0
    async with aclosing(_events(stub, request)) as events:
        async for event in events:
            if isinstance(event, Opened):
                epoch, head = event.epoch, event.head
            elif isinstance(event, Ticks):
                return epoch, head, list(event.batch.ticks)
    return epoch, head, []


async def _events(
    stub: feed_pb2_grpc.FeedServiceStub, request: feed_pb2.SubscribeRequest
) -> AsyncIterator[FeedEvent]:
    """The events of one Subscribe call (READ_TIMEOUT_S at most), cancelled when closed."""
    call = stub.Subscribe(request, timeout=READ_TIMEOUT_S)
    reader = SubscribeReader()
    try:
        async for response in call:
            if (event := reader.read(response)) is not None:
                yield event
    finally:
        call.cancel()


def _unavailable(error: grpc.aio.AioRpcError | TimeoutError) -> Problem:
    detail = error.details() if isinstance(error, grpc.aio.AioRpcError) else "timed out"
    return Problem(
        503,
        "feed-unavailable",
        "Feed unavailable",
        f"the feed's history could not be read: {detail}",
        headers={"Retry-After": RETRY_AFTER_S},
    )


def parse_limit(raw: str | None) -> int:
    """``limit``: 1 to MAX_LIMIT bars (absent: DEFAULT_LIMIT); Problem 400 otherwise."""
    if raw is None:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_LIMIT):
        raise Problem(
            400, "invalid-limit", "Invalid limit", f"limit is a whole number, 1 to {MAX_LIMIT}"
        )
    return int(raw)


def parse_interval(raw: str | None, offered: list[str]) -> str:
    """``interval``: one the feed makes (absent: ``1m`` when made, else the first); Problem 400
    otherwise."""
    if raw is None and offered:
        return "1m" if "1m" in offered else offered[0]
    if raw not in offered:
        shown = (raw or "")[:20]
        raise Problem(
            400,
            "invalid-interval",
            "Invalid interval",
            f"bar interval {shown!r} is not made by the feed; it makes "
            f"{', '.join(offered) or 'no bars'}",
        )
    assert raw is not None
    return raw


@router.get(
    "/bars/{symbol}",
    summary="Recent bars of a symbol, for a chart's first paint",
    description="The last `limit` final bars of `interval` from the feed's history, oldest "
    "first, then the open bar if one is filling: `{symbol, interval, epoch, lastEventId, "
    "bars: [{interval, start, open, high, low, close, volume, quoteVolume, trades, final}]}`. "
    "Open `/sse/{symbol}?types=bar&last_event_id=<lastEventId>` next for every later bar.",
    responses=PROBLEMS,
)
async def recent_bars(request: Request, symbol: str, edge: Edge) -> JSONResponse:
    query = request.query_params
    check_known(query.keys(), BAR_PARAMETERS)
    (symbol,) = parse_symbols([symbol], 1)
    if edge.verifier is not None:
        authorize(edge.verifier, request, [symbol])
    edge.require_ready()
    await require_known(edge, [symbol])
    interval = parse_interval(query.get("interval"), edge.feed.bar_intervals)
    limit = parse_limit(query.get("limit"))
    try:
        epoch, head, bars = await read_bars(edge.feed.stub, symbol, interval, limit)
    except (grpc.aio.AioRpcError, TimeoutError) as error:
        raise _unavailable(error) from None
    return JSONResponse(
        {
            "symbol": symbol,
            "interval": interval,
            "epoch": epoch,
            "lastEventId": format_event_id(epoch, head),
            "bars": bars,
        }
    )


async def read_bars(
    stub: feed_pb2_grpc.FeedServiceStub, symbol: str, interval: str, limit: int
) -> tuple[str, int, list[dict[str, Any]]]:
    """(epoch, head, bars): the last ``limit`` final bars of ``interval`` the feed's history
    holds up to its head when the call opened, then the bar still filling if it is newer.
    Raises AioRpcError or TimeoutError (READ_TIMEOUT_S)."""
    request = feed_pb2.SubscribeRequest(
        symbols=[symbol], types=[tick_pb2.TICK_TYPE_BAR], earliest=True, progress_updates=True
    )
    finals: deque[tick_pb2.Bar] = deque(maxlen=limit)
    filling: tick_pb2.Bar | None = None
    epoch, head = "", 0
    async with aclosing(_events(stub, request)) as events:
        async for event in events:
            if isinstance(event, Opened):
                epoch, head = event.epoch, event.head
            elif isinstance(event, Reset):
                epoch = event.epoch
            elif isinstance(event, Ticks):
                for tick in event.batch.ticks:
                    bar = tick.bar
                    if tick.offset <= head and bar.interval == interval:
                        if bar.final:
                            finals.append(bar)
                        else:
                            filling = bar
            if isinstance(event, (Ticks, Progress)) and _passed(event, head):
                break
    bars = [json_format.MessageToDict(bar) for bar in finals]
    if filling is not None and (not finals or _later(filling, finals[-1])):
        bars.append(json_format.MessageToDict(filling))
    return epoch, head, bars


def _passed(event: Ticks | Progress, head: int) -> bool:
    reached = event.batch.head_offset if isinstance(event, Ticks) else event.head
    return reached >= head


def _later(bar: tick_pb2.Bar, than: tick_pb2.Bar) -> bool:
    return bar.start.ToNanoseconds() > than.start.ToNanoseconds()
