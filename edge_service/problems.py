"""RFC 9457 problem details: every error before a stream starts is one of these."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://tickstream.dev/problems/"


class Problem(Exception):
    """An error answered with a problem document; ``kind`` becomes the ``type`` URI's last part."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status, self.kind, self.title, self.detail = status, kind, title, detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(problem: Problem, instance: str) -> JSONResponse:
    """The ``application/problem+json`` response of ``problem`` for request path ``instance``."""
    body = {
        "type": PROBLEM_BASE + problem.kind,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": instance if len(instance) <= 200 else instance[:200] + "...",
        **problem.extra,
    }
    return JSONResponse(
        body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_MEDIA_TYPE
    )


async def handle_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(exc, request.url.path)


async def handle_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kinds = {404: ("not-found", "Not found"), 405: ("method-not-allowed", "Method not allowed")}
    kind, title = kinds.get(exc.status_code, ("http-error", "HTTP error"))
    problem = Problem(
        exc.status_code,
        kind,
        title,
        str(exc.detail),
        headers=dict(exc.headers or {}),
    )
    return problem_response(problem, request.url.path)


async def handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": [str(part) for part in error.get("loc", ())], "msg": str(error.get("msg", ""))}
        for error in exc.errors()
    ]
    problem = Problem(
        422,
        "invalid-request",
        "Invalid request",
        "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors),
        errors=errors,
    )
    return problem_response(problem, request.url.path)
