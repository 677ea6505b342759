"""Why the feed does not answer, in a word an operator can act on.

A wrong token, a missing or wrong certificate, or a target that speaks another protocol all
look alike from outside (the edge is not ready, 503). The edge names the cause instead: in
``/readyz`` (``{"feed": "unauthenticated", ...}``), in the metric ``tickstream_edge_feed_problem``
and in one log line each time the cause changes (not at every check).
"""

from __future__ import annotations

import grpc

CAUSES = (
    "unreachable",  # nothing listens there (connection refused)
    "tls",  # a TLS handshake failed: a plaintext feed, a wrong or missing certificate
    "protocol",  # something answers, but not HTTP/2 gRPC (an HTTP/1 server, say)
    "unauthenticated",  # the feed refused the edge's token (--feed-token)
    "permission_denied",  # the token is known but may not do this
    "timeout",  # no answer in time (a stopped or overloaded feed)
    "not_serving",  # the feed answers but is not ready (loading, cut off from its backbone)
    "unavailable",  # any other transport failure
)


def cause_of(error: grpc.aio.AioRpcError) -> str:
    """The cause (one of CAUSES, else the status code's name in lower case) of a failed call."""
    code = error.code()
    details = (error.details() or "").lower()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return "unauthenticated"
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return "permission_denied"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "timeout"
    if code != grpc.StatusCode.UNAVAILABLE:
        return code.name.lower()
    if "handshake" in details or "ssl" in details or "certificate" in details:
        return "tls"
    if "http/2" in details or "http2" in details or "frame" in details:
        return "protocol"
    if "connection refused" in details or "failed to connect" in details:
        return "unreachable"
    return "unavailable"
