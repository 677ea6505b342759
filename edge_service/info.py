"""The edge's JSON and page routes: symbols, health, readiness, metrics, event schemas, the page."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from google.protobuf import json_format
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .auth import authorize
from .params import check_known
from .problems import Problem
from .sources import source_report
from .state import RETRY_AFTER_S, EdgeState, edge_state
from .streams import STREAM_PROBLEMS

EVENT_SCHEMAS = ("trade", "quote", "book", "bar", "reset", "status", "disconnect")
FEED_PROBLEMS = {503: STREAM_PROBLEMS[503]}
CHART_LIBRARY = "static/vendor/lightweight-charts.standalone.production.js"  # see its README

router = APIRouter()
Edge = Annotated[EdgeState, Depends(edge_state)]


@router.get("/symbols", summary="Symbols the feed serves", responses=FEED_PROBLEMS)
async def list_symbols(request: Request, edge: Edge) -> JSONResponse:
    check_known(request.query_params.keys(), ("token",))
    if edge.verifier is not None:
        authorize(edge.verifier, request, [])
    edge.require_ready()
    await edge.feed.refresh_now()
    return JSONResponse(
        {
            "epoch": edge.feed.epoch,
            "barIntervals": edge.feed.bar_intervals,
            "symbols": [
                json_format.MessageToDict(info, always_print_fields_with_no_presence=True)
                for info in edge.feed.symbols.values()
            ],
        }
    )


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the feed answers and a source flows",
    description="200 while the feed answers and any of its sources flows (or none is "
    "down); 503 problem JSON otherwise. Both list the feed's sources and those down.",
    responses=FEED_PROBLEMS,
)
async def readyz(edge: Edge) -> dict[str, Any]:
    edge.require_ready()
    report = source_report(edge.feed.sources)
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
        "feed": edge.feed.target,
        "epoch": edge.feed.epoch,
        "sources": report.sources,
        "sourcesDown": report.down,
    }


@router.get(
    "/metrics",
    summary="Prometheus metrics (text format)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
)
async def prometheus_metrics(edge: Edge) -> Response:
    return Response(generate_latest(edge.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@cache
def _resource(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text("utf-8")


@router.get(
    "/schemas/{name}.json",
    summary="JSON Schema of an SSE event's data (" + ", ".join(EVENT_SCHEMAS) + ")",
    responses={404: STREAM_PROBLEMS[404]},
)
async def event_schema(name: str) -> JSONResponse:
    if name not in EVENT_SCHEMAS:
        raise Problem(404, "not-found", "Not found", f"event types: {', '.join(EVENT_SCHEMAS)}")
    return JSONResponse(
        json.loads(_resource(f"schemas/{name}.json")), media_type="application/schema+json"
    )


@cache
def _chart_library() -> bytes:
    return resources.files(__package__).joinpath(CHART_LIBRARY).read_bytes()


@router.get(
    "/static/lightweight-charts.js",
    summary="The chart library of the live page (TradingView Lightweight Charts, Apache-2.0)",
    response_class=Response,
)
async def chart_library() -> Response:
    return Response(
        _chart_library(),
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=86400"},
    )


@router.get("/", summary="Live ticker board", response_class=HTMLResponse)
async def index() -> HTMLResponse:
    return HTMLResponse(_resource("static/index.html"))
