"""Domain errors of the feed; the servicer maps each to a gRPC status code."""

from __future__ import annotations


class FeedError(Exception):
    """Base of the errors a request can cause."""


class InvalidRequest(FeedError):
    """Empty or malformed request: INVALID_ARGUMENT."""


class UnknownSymbol(FeedError):
    """A symbol the feed does not serve: NOT_FOUND."""


class NotReady(FeedError):
    """The source is still loading: UNAVAILABLE."""
