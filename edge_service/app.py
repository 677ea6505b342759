"""The edge's HTTP surface: SSE streams, symbols, health, metrics and the live page."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from google.protobuf import json_format
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from .auth import Grant, TokenVerifier, authorize, cookie_header, token_of
from .config import EdgeSettings
from .cursor import MalformedCursor, parse_cursor
from .encoding import encode_preamble
from .feed_client import FeedClient, channel_credentials
from .limits import RequestSizeLimit, StreamLimits
from .metrics import EdgeMetrics
from .params import parse_symbols, parse_types
from .problems import (
    PROBLEM_MEDIA_TYPE,
    Problem,
    handle_http_exception,
    handle_problem,
    handle_validation_error,
)
from .session import ClientSession
from .sources import source_report
from .upstream import UpstreamPool, UpstreamUnavailable

log = logging.getLogger(__name__)

RETRY_AFTER_S = "2"
SHUTDOWN_GRACE_S = 2.0  # for each stream to send its final event once shutdown starts
SSE_DESCRIPTION = (
    "Server-Sent Events (WHATWG HTML, 'Server-sent events'). Each tick is `event: trade` or "
    "`event: quote` with `id: <epoch>-<offset>` and `data:` one line of JSON (the proto3 JSON "
    "mapping of tickstream.v1.Tick). Also `event: reset` (resume point not honoured; data gives "
    "reason and epoch), `event: status` (a symbol turned stale or live again; no id) and "
    "`event: disconnect` (the edge ends the stream; data gives the reason). "
    "Comment heartbeats every 15 s at most; a `retry:` hint first. The `data` of each event "
    "type has a JSON Schema at `/schemas/{trade,quote,reset,status,disconnect}.json`."
)
EVENT_SCHEMAS = ("trade", "quote", "reset", "status", "disconnect")
STREAM_PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {PROBLEM_MEDIA_TYPE: {}}}
    for status, text in (
        (400, "Malformed symbols or types, or too many symbols."),
        (401, "With --auth jwt: no bearer token, or one that is invalid or expired."),
        (403, "With --auth jwt: the token's symbols claim does not allow a symbol."),
        (404, "Unknown symbol."),
        (422, "Invalid query parameter."),
        (503, "The feed is unavailable; see Retry-After."),
    )
}
FEED_PROBLEMS = {503: STREAM_PROBLEMS[503]}
SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": SSE_DESCRIPTION,
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    **STREAM_PROBLEMS,
}

TypesQuery = Annotated[
    list[str] | None,
    Query(description="Comma-separated tick types: trade, quote (default both)."),
]
SnapshotQuery = Annotated[
    bool, Query(description="Start with the latest trade and quote of each symbol.")
]
LastEventIdQuery = Annotated[
    str | None,
    Query(
        description="Resume cursor for the first connect: `<epoch>-<offset>` or `earliest` "
        "(the whole retained history). The Last-Event-ID header takes precedence.",
    ),
]
LastEventIdHeader = Annotated[
    str | None, Header(alias="Last-Event-ID", description="Sent by EventSource on reconnect.")
]


async def _sse_body(session: ClientSession, preamble: bytes) -> AsyncIterator[bytes]:
    try:
        yield preamble
        while (chunk := await session.next_chunk()) is not None:
            yield chunk
            session.sent()
    finally:
        session.close()


async def _heartbeats(sessions: set[ClientSession], interval: float, limits: StreamLimits) -> None:
    """Every ``interval`` seconds, a comment heartbeat to each stream that sent nothing since
    the last round: one task for all streams, not a timer per stream. Also forgets refilled
    connect-rate buckets."""
    frame = ServerSentEvent(comment="ping", sep="\n").encode()
    while True:
        await asyncio.sleep(interval)
        for session in list(sessions):
            session.heartbeat(frame)
        limits.prune()


async def _end_on_shutdown(
    sessions: set[ClientSession], shutdown: anyio.Event, retry_ms: int
) -> None:
    """When the server starts shutting down (sse-starlette sets ``shutdown``), end every stream
    with a ``disconnect`` event whose ``retry`` is jittered between 1x and 4x ``retry_ms``, so
    clients do not all return at once."""
    await shutdown.wait()
    for session in list(sessions):
        jittered = random.randint(retry_ms, max(retry_ms, 1) * 4)
        session.end("shutdown", "the edge is restarting; reconnect", retry_ms=jittered)


def _verifier(settings: EdgeSettings) -> TokenVerifier | None:
    if settings.auth == "off":
        return None
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
    return TokenVerifier(
        hs256_secret=secret,
        public_key_file=settings.jwt_public_key,
        jwks_file=settings.jwt_jwks,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        leeway=settings.jwt_leeway,
    )


def _end_at_expiry(session: ClientSession, grant: Grant) -> asyncio.TimerHandle:
    """End ``session`` with a ``disconnect`` event (``token_expired``) when its token expires."""
    loop = asyncio.get_running_loop()
    return loop.call_at(
        loop.time() + max(0.0, grant.expires - time.time()),
        session.end,
        "token_expired",
        "the token has expired; reconnect with a fresh one",
    )


def create_app(settings: EdgeSettings) -> FastAPI:
    """The edge application; the feed connection opens in its lifespan. Raises ValueError
    for an unusable auth configuration (e.g. ``--auth jwt`` without a key)."""
    metrics = EdgeMetrics()
    verifier = _verifier(settings)
    credentials = channel_credentials(
        settings.feed_tls_ca, settings.feed_tls_cert, settings.feed_tls_key
    )
    sessions: set[ClientSession] = set()  # every open stream
    metrics.watch_queues(sessions)
    limits = StreamLimits(
        max_streams=settings.max_streams,
        per_address=settings.max_streams_per_client,
        per_token=settings.max_streams_per_token,
        connect_rate=settings.connect_rate,
        connect_burst=settings.connect_burst,
    )
    shutdown = anyio.Event()  # set by sse-starlette when the server begins to shut down

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        feed = FeedClient(
            settings.feed_target,
            metrics,
            settings.feed_check_interval,
            credentials=credentials,
            token=settings.feed_token.get_secret_value() if settings.feed_token else None,
        )
        pool = UpstreamPool(
            feed.sync_stub, metrics, settings.upstream_linger, settings.upstream_stall_timeout
        )
        app.state.feed, app.state.pool = feed, pool
        metrics.watch_upstreams(pool.upstreams)
        feed.start()
        chores = [
            asyncio.create_task(
                _heartbeats(sessions, settings.ping_interval, limits), name="heartbeats"
            ),
            asyncio.create_task(
                _end_on_shutdown(sessions, shutdown, settings.retry_ms), name="shutdown-watch"
            ),
        ]
        try:
            yield
        finally:
            for chore in chores:
                chore.cancel()
            await pool.close()
            await feed.close()

    app = FastAPI(
        title="tickstream edge",
        summary="Real-time ticks from the tickstream feed as Server-Sent Events.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load from a CDN; the edge serves no third-party code
        redoc_url=None,
    )
    app.add_middleware(
        RequestSizeLimit,
        max_target=settings.max_request_target,
        max_headers=settings.max_header_bytes,
    )
    if settings.cors_origins:
        any_origin = "*" in settings.cors_origins
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=not any_origin,  # never '*' together with credentials
            allow_methods=["GET"],
            allow_headers=["Authorization", "Last-Event-ID", "Cache-Control"],
            max_age=600,
        )
    app.add_exception_handler(Problem, handle_problem)
    app.add_exception_handler(StarletteHTTPException, handle_http_exception)
    app.add_exception_handler(RequestValidationError, handle_validation_error)

    def feed_of(request: Request) -> FeedClient:
        feed: FeedClient = request.app.state.feed
        return feed

    def require_ready(feed: FeedClient) -> None:
        if not feed.ready:
            raise Problem(
                503,
                "feed-unavailable",
                "Feed unavailable",
                f"the feed at {feed.target} is not answering; retry shortly",
                headers={"Retry-After": RETRY_AFTER_S},
            )

    async def open_stream(
        request: Request,
        raw_symbols: list[str],
        types: list[str] | None,
        snapshot: bool,
        last_event_id: str | None,
    ) -> EventSourceResponse:
        symbols = parse_symbols(raw_symbols, settings.max_symbols)
        kinds = parse_types(types)
        address = request.client.host if request.client else "unknown"
        limits.check_rate(address)
        grant = authorize(verifier, request, symbols) if verifier is not None else None
        feed = feed_of(request)
        require_ready(feed)
        unknown = [s for s in symbols if s not in feed.symbols]
        if unknown:  # a producer may have published it since the last refresh
            await feed.lookup(unknown[:10])
            unknown = [s for s in symbols if s not in feed.symbols]
        if unknown:
            raise Problem(
                404,
                "unknown-symbol",
                "Unknown symbol",
                f"the feed does not serve {', '.join(unknown[:10])}",
                symbols=unknown[:10],
            )
        start = None
        reset = None
        if last_event_id:
            try:
                start = parse_cursor(last_event_id)
            except MalformedCursor as error:
                reset = ("malformed_cursor", str(error))
        pool: UpstreamPool = request.app.state.pool
        uncount = limits.admit(address, grant.holder if grant is not None else None)
        try:
            upstreams = await pool.acquire(symbols, settings.upstream_ready_timeout)
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

        expiry: asyncio.TimerHandle | None = None

        def release(session: ClientSession) -> None:
            uncount()
            if expiry is not None:
                expiry.cancel()
            sessions.discard(session)
            pool.detach(session, symbols)
            metrics.open_streams.dec()

        session = ClientSession(
            symbols,
            kinds,
            queue_limit=settings.client_queue_events,
            queue_bytes_limit=settings.client_queue_bytes,
            catchup_limit=settings.catchup_buffer_events,
            metrics=metrics,
            on_close=release,
        )
        metrics.open_streams.inc()
        sessions.add(session)
        pool.attach(session, upstreams)
        if start is None:
            session.begin_live(upstreams, snapshot, reset)
        else:
            session.begin_resume(upstreams, start, snapshot, feed.stub)
        if shutdown.is_set():
            session.end("shutdown", "the edge is restarting; reconnect", retry_ms=settings.retry_ms)
        headers = {"Cache-Control": "no-cache"}
        if grant is not None:
            expiry = _end_at_expiry(session, grant)
            token, from_query = token_of(request)
            if from_query and token:  # later reconnects carry the HttpOnly cookie instead
                headers["Set-Cookie"] = cookie_header(token, request, grant.expires)
        return EventSourceResponse(
            _sse_body(session, encode_preamble(settings.retry_ms)),
            shutdown_event=shutdown,
            shutdown_grace_period=SHUTDOWN_GRACE_S,
            headers=headers,
            ping=0,  # heartbeats come from _heartbeats, one task for every stream
            sep="\n",
            send_timeout=settings.send_timeout,
            background=BackgroundTask(session.close),
        )

    @app.get(
        "/sse/{symbol}",
        summary="SSE stream of one symbol",
        responses=SSE_RESPONSES,
        response_class=Response,
    )
    async def sse_one(
        request: Request,
        symbol: str,
        types: TypesQuery = None,
        snapshot: SnapshotQuery = False,
        last_event_id: LastEventIdQuery = None,
        last_event_id_header: LastEventIdHeader = None,
    ) -> Response:
        return await open_stream(
            request, [symbol], types, snapshot, last_event_id_header or last_event_id
        )

    @app.get(
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
        types: TypesQuery = None,
        snapshot: SnapshotQuery = False,
        last_event_id: LastEventIdQuery = None,
        last_event_id_header: LastEventIdHeader = None,
    ) -> Response:
        return await open_stream(
            request, symbols, types, snapshot, last_event_id_header or last_event_id
        )

    @app.get("/symbols", summary="Symbols the feed serves", responses=FEED_PROBLEMS)
    async def list_symbols(request: Request) -> JSONResponse:
        if verifier is not None:
            authorize(verifier, request, [])
        feed = feed_of(request)
        require_ready(feed)
        await feed.refresh_now()
        return JSONResponse(
            {
                "epoch": feed.epoch,
                "symbols": [
                    json_format.MessageToDict(info, always_print_fields_with_no_presence=True)
                    for info in feed.symbols.values()
                ],
            }
        )

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Readiness: the feed answers and a source flows",
        description="200 while the feed answers and any of its sources flows (or none is "
        "down); 503 problem JSON otherwise. Both list the feed's sources and those down.",
        responses=FEED_PROBLEMS,
    )
    async def readyz(request: Request) -> dict[str, Any]:
        feed = feed_of(request)
        require_ready(feed)
        report = source_report(feed.sources)
        if not report.ready:
            raise Problem(
                503,
                "sources-down",
                "No source is flowing",
                f"the feed's sources are down: {', '.join(report.down[:10])}",
                headers={"Retry-After": RETRY_AFTER_S},
                sources=report.sources,
                sourcesDown=report.down,
            )
        return {
            "status": "ready",
            "feed": feed.target,
            "epoch": feed.epoch,
            "sources": report.sources,
            "sourcesDown": report.down,
        }

    @app.get(
        "/metrics",
        summary="Prometheus metrics (text format)",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
    )
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    schemas = {
        name: json.loads(
            resources.files(__package__).joinpath(f"schemas/{name}.json").read_text("utf-8")
        )
        for name in EVENT_SCHEMAS
    }

    @app.get(
        "/schemas/{name}.json",
        summary="JSON Schema of an SSE event's data (trade, quote, reset, status, disconnect)",
        responses={404: STREAM_PROBLEMS[404]},
    )
    async def event_schema(name: str) -> JSONResponse:
        if name not in schemas:
            raise Problem(404, "not-found", "Not found", f"event types: {', '.join(EVENT_SCHEMAS)}")
        return JSONResponse(schemas[name], media_type="application/schema+json")

    page = resources.files(__package__).joinpath("static/index.html").read_text("utf-8")

    @app.get("/", summary="Live ticker board", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    app.state.metrics = metrics
    return app
