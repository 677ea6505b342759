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


class AlreadyStored(Exception):
    """The backbone refused a batch holding a tick whose (symbol, dedup id) it already stored
    (another replica took the same resent batch): nothing of the batch was stored. The ingest
    path catches up with the stream, drops the known duplicates and stores the rest."""


class LimitExceeded(FeedError):
    """Past a producer's rate or batch limit, or the feed's symbol cap: RESOURCE_EXHAUSTED."""


class PermissionDenied(FeedError):
    """The caller's token does not allow this symbol or action: PERMISSION_DENIED."""
