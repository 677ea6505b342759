"""Request heads bounded while they arrive: a size cap and a time limit, in the edge itself.

uvicorn's httptools protocol gathers a request's head (request line and header lines) until
it is complete, however large and however slowly it comes: a 100 MiB header was parsed for
about 20 s on the event loop before ``RequestSizeLimit`` could answer 431, and a head never
finished (slowloris) kept its connection open for good. :class:`GuardedHttpTools` counts a
head's bytes as they arrive and answers ``431`` and closes past ``head_limit`` bytes, without
parsing the rest; and closes a connection whose head is not complete ``head_timeout`` seconds
after it began. The complete head then still goes through ``RequestSizeLimit``'s finer
414/431 problem answers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_REASON = b"the request head is over the edge's limit\n"
TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_REASON), _REASON)
)
HEAD_SLACK = 8_192
"""Bytes allowed beyond --max-request-target plus --max-header-bytes (request line, framing)."""


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with ``head_limit`` (bytes) and ``head_timeout``
    (seconds) on each request head; set both on a subclass (:func:`guarded_protocol`)."""

    head_limit = 0  # 0: no size cap
    head_timeout = 0.0  # 0: no time limit

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head and self.head_limit:
            self._head_bytes += len(data)
            if self._head_bytes > self.head_limit:
                self._stop_timer()
                self.transport.write(TOO_LARGE)
                self.transport.close()
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # a keep-alive or pipelined request's head begins
            self._start_head()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_timer()
        super().on_headers_complete()

    def _start_head(self) -> None:
        """A head begins (a new connection, or the parser met a new request): count and time
        it until ``on_headers_complete``. An idle keep-alive connection is uvicorn's to end."""
        self._in_head, self._head_bytes = True, 0
        self._stop_timer()
        if self.head_timeout:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_expired)

    def _stop_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self.transport.close()


def guarded_protocol(head_limit: int, head_timeout: float) -> type[GuardedHttpTools]:
    """:class:`GuardedHttpTools` with these bounds, for ``uvicorn.Config(http=...)``."""
    return type(
        "GuardedHttpTools",
        (GuardedHttpTools,),
        {"head_limit": head_limit, "head_timeout": head_timeout},
    )
