"""``GET /sse/{symbol}`` and ``GET /sse?symbols=A,B`` served as a bare ASGI app, in front of
FastAPI: the app's own middleware (size limits, CORS) around :func:`streams.open_stream`, with
the query parameters read by hand and a Problem answered as problem JSON, as the documented
routes in :mod:`edge_service.streams` would.

Why: a stream lives as long as its connection, and every ASGI layer it passes through stays
suspended with it. Through FastAPI's stack (error middleware, exception middleware, router,
request/response wrappers, dependency solving) a stream cost about 6 KiB more RSS and 0.2 ms
more CPU to set up than here (tracemalloc and py-spy, 2,000-5,000 idle connections; issue 11's
targets are 16 KiB and 0.3 ms). Every other request, and any method other than GET on these
paths (a CORS preflight, a 405), goes through FastAPI unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Literal

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from .problems import Problem, handle_http_exception, problem_response
from .streams import StreamOptions, open_stream

SSE_PATH = re.compile(r"/sse(?:/([^/]+))?")
"""``/sse`` (group 1 None) or ``/sse/{symbol}`` (group 1 the symbol), as the whole path."""
RAW_ONE_SEGMENT = re.compile(rb"/sse/[^/?]+")
"""``/sse/`` and one segment, before percent-decoding."""

BOOLEANS = {
    **dict.fromkeys(("1", "on", "t", "true", "y", "yes"), True),
    **dict.fromkeys(("0", "off", "f", "false", "n", "no"), False),
}
"""What FastAPI's bool query parameters accept, lower-cased."""
NOT_BOOLEAN = "Input should be a valid boolean, unable to interpret input"


def stream_path(scope: Scope) -> bool:
    """Whether ``scope`` is a GET of ``/sse`` or ``/sse/{symbol}`` (a symbol whose ``/`` came
    percent-encoded, ``/sse/BTC%2FUSDT``, counts: it gets a 400 naming the symbol)."""
    if scope["type"] != "http" or scope["method"] != "GET":
        return False
    return _symbol_of(scope) is not False


def _symbol_of(scope: Scope) -> str | Literal[False] | None:
    """The path's symbol (decoded), None for ``/sse``, False for any other path."""
    match = SSE_PATH.fullmatch(scope["path"])
    if match is not None:
        return match.group(1)
    raw = scope.get("raw_path") or b""
    if RAW_ONE_SEGMENT.fullmatch(raw):
        return scope["path"][len("/sse/") :]
    return False


def build(middleware: Iterable[Any]) -> ASGIApp:
    """The stream endpoint wrapped in ``middleware`` (Starlette ``Middleware`` entries, outermost
    first, as ``app.user_middleware``), the way Starlette builds its own stack."""
    app: ASGIApp = serve
    for cls, args, kwargs in reversed(list(middleware)):
        app = cls(app, *args, **kwargs)
    return app


async def serve(scope: Scope, receive: Receive, send: Send) -> None:
    """The stream of one ``/sse`` request, or its problem JSON (400, 401/403, 404, 422, 429,
    503)."""
    request = Request(scope, receive)
    symbol = _symbol_of(scope)
    assert symbol is not False, "routed here by stream_path"
    try:
        symbols, options = read_request(request, symbol)
        response: Callable[[Scope, Receive, Send], Any] = await open_stream(
            request, request.state.edge, symbols, options
        )
    except Problem as problem:
        response = problem_response(problem, request.url.path)
    except StarletteHTTPException as error:
        response = await handle_http_exception(request, error)
    await response(scope, receive, send)


def read_request(request: Request, symbol: str | None) -> tuple[list[str], StreamOptions]:
    """The symbols (``symbol`` from the path, else the ``symbols`` query parameter) and the
    shared options of ``request``; Problem 422 naming every invalid parameter, in the order
    FastAPI's validation names them."""
    errors: list[tuple[str, str]] = []
    options = query_options(request, errors)
    if symbol is not None:  # as FastAPI's router would: open_stream tells the routes apart by it
        request.scope["path_params"] = {"symbol": symbol}
    symbols = [symbol] if symbol is not None else request.query_params.getlist("symbols")
    if not symbols:
        errors.append(("symbols", "Field required"))
    if errors:
        raise invalid(errors)
    return symbols, options


def query_options(request: Request, errors: list[tuple[str, str]]) -> StreamOptions:
    """The shared query parameters (see :func:`streams.stream_options`) read from ``request``;
    a snapshot that is no boolean adds its (field, message) to ``errors``."""
    if not request.scope["query_string"]:  # the common case: nothing to parse
        return StreamOptions(None, False, request.headers.get("last-event-id"))
    query = request.query_params
    snapshot = query.get("snapshot")
    flag = False
    if snapshot is not None:
        if (value := BOOLEANS.get(snapshot.lower())) is None:
            errors.append(("snapshot", NOT_BOOLEAN))
        else:
            flag = value
    last_event_id = request.headers.get("last-event-id") or query.get("last_event_id")
    types = query.getlist("types") or None
    return StreamOptions(
        types,
        flag,
        last_event_id,
        query.get("depth"),
        query.get("max_rate"),
        query.getlist("intervals") or None,
    )


def invalid(errors: list[tuple[str, str]]) -> Problem:
    """The 422 problem FastAPI's validation gives for ``errors``, (query field, message) pairs
    (``handle_validation_error``'s shape)."""
    found = [{"loc": ["query", field], "msg": message} for field, message in errors]
    return Problem(
        422,
        "invalid-request",
        "Invalid request",
        "; ".join(f"query.{field}: {message}" for field, message in errors),
        errors=found,
    )
