"""Errors the client raises to its caller; transient faults are retried, never raised."""

from __future__ import annotations

import grpc

TERMINAL_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
"""Status codes that retrying cannot fix: a bad request, a missing right, a refused limit.
Everything else (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, INTERNAL, UNKNOWN, ABORTED...) is
treated as a lost connection and retried with backoff."""


class TickstreamError(Exception):
    """Base of every error this package raises. ``code`` is the gRPC status code that ended the
    call (None when the error is the client's own) and ``details`` the feed's message."""

    def __init__(
        self, message: str, code: grpc.StatusCode | None = None, details: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


class SubscribeError(TickstreamError):
    """A subscription ended for good: the feed refused it with a terminal status (unknown symbol
    NOT_FOUND, malformed request INVALID_ARGUMENT, PERMISSION_DENIED, UNAUTHENTICATED)."""


class PublishError(TickstreamError):
    """The feed refused a batch with a terminal status (INVALID_ARGUMENT names the tick index and
    field, PERMISSION_DENIED, UNAUTHENTICATED, RESOURCE_EXHAUSTED for rate, batch or symbol
    limits). ``batch_id`` is the refused batch; it and every later unacknowledged batch are
    dropped (``dropped_ticks`` ticks in all), and the publisher accepts no more ticks."""

    def __init__(
        self,
        message: str,
        code: grpc.StatusCode | None = None,
        details: str = "",
        *,
        batch_id: int = 0,
        dropped_ticks: int = 0,
    ) -> None:
        super().__init__(message, code, details)
        self.batch_id = batch_id
        self.dropped_ticks = dropped_ticks
