"""The SSE routes, ``/sse/{symbol}`` and ``/sse?symbols=A,B``: admission (validation, limits,
auth, the feed's symbols), then a :class:`ClientSession` on the shared upstreams, written out by
an :class:`SseResponse`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response

from . import fanout
from .auth import Grant, authorize, cookie_header, token_of
from .cursor import Cursor, MalformedCursor, parse_cursor
from .encoding import BAR, BOOK, bar_kinds, book_kind, encode_preamble
from .limits import client_key
from .merge import SymbolMerge
from .params import (
    STREAM_PARAMETERS,
    check_known,
    check_one_symbol,
    parse_depth,
    parse_intervals,
    parse_rate,
    parse_symbols,
    parse_types,
)
from .problems import PROBLEM_MEDIA_TYPE, Problem
from .rate import RateGate
from .response import SseResponse
from .session import ClientSession
from .state import RETRY_AFTER_S, EdgeState, edge_state
from .upstream import SymbolUpstream, UpstreamUnavailable

SSE_DESCRIPTION = (
    "Server-Sent Events (WHATWG HTML, 'Server-sent events'). Each tick is `event: trade`, "
    "`event: quote`, `event: book` or `event: bar` with `id: <epoch>-<offset>` and `data:` one "
    "line of JSON (the proto3 JSON mapping of tickstream.v1.Tick; a book event's body is the "
    "top `depth` levels a side after the update, as a snapshot; a bar is an OHLCV candle, "
    "`final` once closed). Also `event: reset` (resume point not "
    "honoured; data gives reason and epoch), `event: status` (a symbol turned stale or live "
    "again; no id) and `event: disconnect` (the edge ends the stream; data gives the reason). "
    "Comment heartbeats every 15 s at most; a `retry:` hint first. The `data` of each event "
    "type has a JSON Schema at `/schemas/{trade,quote,book,bar,reset,status,disconnect}.json`. "
    "An unknown query parameter is a 400 problem naming it."
)
STREAM_PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {PROBLEM_MEDIA_TYPE: {}}}
    for status, text in (
        (400, "Malformed symbols, types or depth, too many symbols, or an unknown parameter."),
        (401, "With --auth jwt: no bearer token, or one that is invalid or expired."),
        (403, "With --auth jwt: the token's symbols claim does not allow a symbol."),
        (404, "Unknown symbol."),
        (414, "The request target is longer than --max-request-target bytes."),
        (422, "Invalid query parameter."),
        (
            429,
            "Too many streams for this client, token or edge, or connects too fast; see "
            "Retry-After.",
        ),
        (431, "The header lines hold more than --max-header-bytes bytes."),
        (503, "The feed is unavailable; see Retry-After."),
    )
}
SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": SSE_DESCRIPTION,
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    **STREAM_PROBLEMS,
}

router = APIRouter()


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """The query parameters both SSE routes share."""

    types: list[str] | None
    snapshot: bool
    last_event_id: str | None
    depth: str | None = None
    max_rate: str | None = None
    intervals: list[str] | None = None


async def stream_options(
    types: Annotated[
        list[str] | None,
        Query(
            description="Comma-separated tick types: trade, quote, book, bar (default trade,quote)."
        ),
    ] = None,
    snapshot: Annotated[
        bool,
        Query(description="Start with the latest trade, quote and book of each symbol."),
    ] = False,
    depth: Annotated[
        int,
        Query(ge=1, le=100, description="Book levels a side in `book` events (default 10)."),
    ] = 10,
    intervals: Annotated[
        list[str] | None,
        Query(description="Bar intervals of `bar` events, e.g. 1s,1m (default: every one)."),
    ] = None,
    max_rate: Annotated[
        float | None,
        Query(
            ge=0.1,
            le=100,
            description="At most this many updates a second per symbol and type: quotes and "
            "books conflate to the newest, trades are batched, never dropped.",
        ),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Query(
            description="Resume cursor for the first connect: `<epoch>-<offset>` or `earliest` "
            "(the whole retained history). The Last-Event-ID header takes precedence.",
        ),
    ] = None,
    last_event_id_header: Annotated[
        str | None,
        Header(alias="Last-Event-ID", description="Sent by EventSource on reconnect."),
    ] = None,
) -> StreamOptions:
    rate = None if max_rate is None else str(max_rate)
    cursor = last_event_id_header or last_event_id
    return StreamOptions(types, snapshot, cursor, str(depth), rate, intervals)


Options = Annotated[StreamOptions, Depends(stream_options)]
Edge = Annotated[EdgeState, Depends(edge_state)]


@router.get(
    "/sse/{symbol}",
    summary="SSE stream of one symbol",
    responses=SSE_RESPONSES,
    response_class=Response,
)
async def sse_one(request: Request, symbol: str, options: Options, edge: Edge) -> Response:
    return await open_stream(request, edge, [symbol], options)


@router.get(
    "/sse",
    summary="One SSE stream multiplexing several symbols",
    responses=SSE_RESPONSES,
    response_class=Response,
)
async def sse_many(
    request: Request,
    symbols: Annotated[
        list[str], Query(description="Comma-separated symbols, e.g. BTCUSDT,ETHUSDT.")
    ],
    options: Options,
    edge: Edge,
) -> Response:
    return await open_stream(request, edge, symbols, options)


def route_parameters(request: Request) -> frozenset[str]:
    """The query parameters ``request``'s route takes; ``/sse/{symbol}`` takes one symbol in
    its path (Problem 400 for a comma list) and no ``symbols=``."""
    if "symbol" not in request.path_params:
        return STREAM_PARAMETERS
    check_one_symbol(request.path_params["symbol"])
    return STREAM_PARAMETERS - {"symbols"}


async def open_stream(
    request: Request, edge: EdgeState, raw_symbols: list[str], options: StreamOptions
) -> SseResponse:
    """Admit the stream, or raise the Problem that says why not (400, 401/403, 404, 429, 503)."""
    settings = edge.settings
    check_known(request.query_params.keys(), route_parameters(request))
    symbols = parse_symbols(raw_symbols, settings.max_symbols)
    kinds = stream_kinds(options, edge.feed.bar_intervals)
    rate = parse_rate(options.max_rate)
    host = request.client.host if request.client else "unknown"
    address = client_key(host, settings.ipv6_prefix)
    edge.registry.limits.check_rate(address)
    grant = authorize(edge.verifier, request, symbols) if edge.verifier is not None else None
    edge.require_ready()
    await require_known(edge, symbols)
    start: Cursor | str | None = None
    reset = None
    if options.last_event_id:
        try:
            start = parse_cursor(options.last_event_id)
        except MalformedCursor as error:
            reset = ("malformed_cursor", str(error))
    uncount = edge.registry.limits.admit(address, grant.holder if grant is not None else None)
    try:
        upstreams = await edge.pool.acquire(symbols, settings.upstream_ready_timeout)
    except UpstreamUnavailable as error:
        uncount()
        raise Problem(
            503,
            "feed-unavailable",
            "Feed unavailable",
            str(error),
            headers={"Retry-After": RETRY_AFTER_S},
        ) from None
    except BaseException:  # e.g. the client left while the upstream was opening
        uncount()
        raise
    session = ClientSession(
        symbols,
        kinds,
        outbox=edge.registry.outbox(),
        catchup_limit=settings.catchup_buffer_events,
        metrics=edge.metrics,
    )
    if rate is not None:
        session.gate = RateGate(
            rate,
            session.release,
            limit=settings.client_queue_events,
            overflow=lambda: session.end(
                "slow_consumer", "more trades waited for max_rate than the queue holds"
            ),
        )
    return _respond(
        request, edge, session, upstreams, (start, reset, options.snapshot), grant, uncount
    )


def stream_kinds(options: StreamOptions, bar_intervals: list[str]) -> frozenset[str]:
    """The event kinds a stream asked for: ``types``, a book as ``book:<depth>`` (clients of
    one depth share its bytes), bars as their intervals' kinds. Raises Problem 400."""
    kinds = parse_types(options.types)
    depth = parse_depth(options.depth)
    intervals = parse_intervals(options.intervals, bar_intervals)  # checked even without bars
    if BOOK in kinds:
        kinds = kinds - {BOOK} | {book_kind(depth)}
    if BAR in kinds:
        kinds = kinds - {BAR} | {kind for i in intervals for kind in bar_kinds(i)}
    return kinds


async def require_known(edge: EdgeState, symbols: list[str]) -> None:
    """Raises Problem 404 naming the symbols the feed does not serve (at most 10)."""
    unknown = [s for s in symbols if s not in edge.feed.symbols]
    if unknown:  # a producer may have published it since the last refresh
        await edge.feed.lookup(unknown[:10])
        unknown = [s for s in symbols if s not in edge.feed.symbols]
    if unknown:
        raise Problem(
            404,
            "unknown-symbol",
            "Unknown symbol",
            f"the feed does not serve {', '.join(unknown[:10])}",
            symbols=unknown[:10],
        )


def _respond(
    request: Request,
    edge: EdgeState,
    session: ClientSession,
    upstreams: list[SymbolUpstream],
    begin: tuple[Cursor | str | None, tuple[str, str] | None, bool],
    grant: Grant | None,
    uncount: Callable[[], None],
) -> SseResponse:
    """Attach ``session`` to its upstreams (no await since they were acquired), register it and
    build its response; ``begin`` is (resume point or None, reset to send first, snapshot)."""
    start, reset, snapshot = begin
    expiry: asyncio.TimerHandle | None = None
    source = _listen(edge, session, upstreams)

    def release() -> None:
        uncount()
        if expiry is not None:
            expiry.cancel()
        if not fanout.leave(source, session):
            return
        if isinstance(source, SymbolMerge):
            edge.merges.release(source)
        else:
            edge.pool.release(session.symbols)

    stream = edge.registry.add(session, release)
    if start is None:
        session.begin_live(source, snapshot, reset)
    else:
        session.begin_resume(source, start, snapshot, edge.feed.stub)
    headers: dict[str, str] = {}
    if grant is not None:
        expiry = _end_at_expiry(session, grant)
        token, from_query = token_of(request)
        if from_query and token:  # later reconnects carry the HttpOnly cookie instead
            headers["Set-Cookie"] = cookie_header(token, request, grant.expires)
    preamble = encode_preamble(edge.settings.retry_ms)
    return SseResponse(stream, edge.registry, preamble, headers)


def _listen(
    edge: EdgeState, session: ClientSession, upstreams: list[SymbolUpstream]
) -> SymbolUpstream | SymbolMerge:
    """What ``session`` follows, joined to its fan-out: its one symbol's upstream, or the shared
    merge of several."""
    source = upstreams[0] if len(upstreams) == 1 else edge.merges.get(upstreams)
    fan_out = fanout.join(source, session, edge.registry.flusher)
    if source is upstreams[0]:
        edge.pool.attach(fan_out, upstreams)  # cancels a pending linger
    return source


def _end_at_expiry(session: ClientSession, grant: Grant) -> asyncio.TimerHandle:
    """End ``session`` with a ``disconnect`` event (``token_expired``) when its token expires."""
    loop = asyncio.get_running_loop()
    return loop.call_at(
        loop.time() + max(0.0, grant.expires - time.time()),
        session.end,
        "token_expired",
        "the token has expired; reconnect with a fresh one",
    )
