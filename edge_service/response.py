"""The SSE response of the streaming routes: headers through the app's middleware (CORS, cookies),
then the body written by the fan-out's own write path (:mod:`edge_service.delivery`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from .delivery import AsgiConnection, DirectConnection, Receive, Send
from .registry import Stream, StreamRegistry

RAW_SEND = "tickstream.raw_send"
"""Scope key of the server's own ``send``, before any middleware wraps it (set by the app)."""


STREAM_HEADERS = (
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
    (b"content-type", b"text/event-stream; charset=utf-8"),
)


class SseResponse(Response):
    """``text/event-stream``: ``preamble`` first, then whatever the stream's outbox gets, until
    it ends (a final ``disconnect`` event) or the client leaves. The stream is removed from
    ``registry`` (releasing all it holds) however the response ends."""

    media_type = "text/event-stream"

    def __init__(
        self,
        stream: Stream,
        registry: StreamRegistry,
        preamble: bytes,
        headers: Mapping[str, str],
    ) -> None:
        # Not Response.__init__: without a body, no content-length (the body is chunked); and
        # the fixed headers encoded once, not per stream.
        self.status_code = 200
        self.background = None
        extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.raw_headers = [*extra, *STREAM_HEADERS]
        self._stream, self._registry, self._preamble = stream, registry, preamble

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        stream = self._stream
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            direct = DirectConnection.of(scope.get(RAW_SEND))
            connection = direct if direct is not None else AsgiConnection(receive, send)
            stream.connection = connection
            if direct is not None:
                direct.write(self._preamble)
            else:
                body = {"type": "http.response.body", "body": self._preamble, "more_body": True}
                await send(body)
            complete = await connection.serve(stream.session.outbox, self._registry.flusher)
        finally:
            self._registry.remove(stream)
        if complete:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
