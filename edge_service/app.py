"""The edge application: middleware, error handlers and routes around an :class:`EdgeState`
that the lifespan builds (the feed connection, shared upstreams, the open streams)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Scope

from . import charts, info, stream_app, streams
from .auth import TokenVerifier
from .config import EdgeSettings
from .delivery import Receive, Send
from .feed_client import FeedClient, channel_credentials
from .limits import RequestSizeLimit, StreamLimits
from .merge import MergePool
from .metrics import EdgeMetrics
from .problems import Problem, handle_http_exception, handle_problem, handle_validation_error
from .registry import StreamRegistry
from .response import RAW_SEND
from .state import EdgeState
from .upstream import UpstreamPool


class EdgeApp(FastAPI):
    """FastAPI, with the SSE streams served beside it (:mod:`edge_service.stream_app`) through
    the same middleware; keeps the server's own ``send`` in the scope for the streams' writes."""

    _streams: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not stream_app.stream_path(scope):
            await super().__call__(scope, receive, send)
            return
        if self._streams is None:  # the middleware list is final once serving
            self._streams = stream_app.build(self.user_middleware)
        scope["app"] = self
        scope[RAW_SEND] = send
        try:
            await self._streams(scope, receive, send)
        finally:
            # uvicorn's cycle holds the scope: without this, scope -> send -> cycle -> scope
            # is a reference cycle that only the cyclic collector would free.
            del scope[RAW_SEND]


def create_app(settings: EdgeSettings) -> EdgeApp:
    """The edge application; the feed connection opens in its lifespan. Raises ValueError
    for an unusable auth configuration (e.g. ``--auth jwt`` without a key)."""
    verifier = _verifier(settings)  # fails here, before serving, on a bad configuration
    app = EdgeApp(
        title="tickstream edge",
        summary="Real-time ticks from the tickstream feed as Server-Sent Events.",
        version="0.1.0",
        lifespan=lambda app: _lifespan(app, settings, verifier),
        docs_url=None,  # Swagger UI and ReDoc load from a CDN; the edge serves no third-party code
        redoc_url=None,
        # The edge exports Prometheus metrics of its own; FastAPI's OpenTelemetry hooks would
        # only cost each request a check (about 5% of a stream's set-up, py-spy).
        telemetry={"tracing": False, "metrics": False, "logs": False},
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
    app.include_router(streams.router)  # documented in the OpenAPI document, served by EdgeApp
    app.include_router(info.router)
    app.include_router(charts.router)
    return app


def begin_shutdown(app: FastAPI) -> None:
    """The server is stopping: every stream gets its farewell now (call on the event loop)."""
    edge: EdgeState | None = getattr(app.state, "edge", None)
    if edge is not None:
        edge.registry.shutdown()


@asynccontextmanager
async def _lifespan(
    app: FastAPI, settings: EdgeSettings, verifier: TokenVerifier | None
) -> AsyncIterator[dict[str, EdgeState]]:
    edge = _build_state(settings, verifier)
    app.state.edge = edge  # for begin_shutdown; routes take it from the request state
    edge.feed.start()
    chore = asyncio.create_task(edge.registry.run(), name="streams")
    try:
        yield {"edge": edge}
    finally:
        chore.cancel()
        await edge.pool.close()
        await edge.feed.close()


def _build_state(settings: EdgeSettings, verifier: TokenVerifier | None) -> EdgeState:
    metrics = EdgeMetrics()
    feed = FeedClient(
        settings.feed_target,
        metrics,
        settings.feed_check_interval,
        credentials=channel_credentials(
            settings.feed_tls_ca, settings.feed_tls_cert, settings.feed_tls_key
        ),
        token=settings.feed_token.get_secret_value() if settings.feed_token else None,
    )
    pool = UpstreamPool(
        lambda: feed.sync_stub,
        metrics,
        settings.upstream_linger,
        settings.upstream_stall_timeout,
    )
    metrics.watch_upstreams(pool.upstreams)
    limits = StreamLimits(
        max_streams=settings.max_streams,
        per_address=settings.max_streams_per_client,
        per_token=settings.max_streams_per_token,
        connect_rate=settings.connect_rate,
        connect_burst=settings.connect_burst,
    )
    registry = StreamRegistry(
        limits,
        metrics,
        queue_events=settings.client_queue_events,
        queue_bytes=settings.client_queue_bytes,
        ping_interval=settings.ping_interval,
        send_timeout=settings.send_timeout,
        retry_ms=settings.retry_ms,
    )
    return EdgeState(settings, feed, pool, MergePool(pool), registry, verifier, metrics)


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
