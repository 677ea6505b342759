"""Request heads bounded while they arrive: a size cap and a time limit, in the edge itself.

uvicorn's httptools protocol gathers a request's head (request line and header lines) until
it is complete, however large and however slowly it comes: a 100 MiB header was parsed for
about 20 s on the event loop before ``RequestSizeLimit`` could answer 431, and a head never
finished (slowloris) kept its connection open for good. :class:`GuardedHttpTools` counts a
head's bytes as they arrive and answers ``431`` and closes past ``head_limit`` bytes, without
parsing the rest; and closes a connection whose head is not complete ``head_timeout`` seconds
after it began. The complete head then still goes through ``RequestSizeLimit``'s finer
414/431 problem answers.

A connect flood from one address is refused the same way: while ``over_rate(address)`` says
the address has spent its connect rate, a new connection from it gets a pre-built ``429`` for
its first bytes, without the HTTP parser, the app or a problem document (bench/hostile.py: the
flood's 5,000 attempts went through all three and cost the healthy streams' p99 6.6x). Peers
that are trusted proxies (``FORWARDED_ALLOW_IPS``) are never refused here: their clients have
budgets of their own, known only once the head is parsed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_REASON = b"the request head is over the edge's limit\n"
TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_REASON), _REASON)
)
_BUSY = b"more connects than this address's connect rate; retry later\n"
OVER_RATE = (
    b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\nretry-after: 1\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_BUSY), _BUSY)
)
HEAD_SLACK = 8_192
"""Bytes allowed beyond --max-request-target plus --max-header-bytes (request line, framing)."""


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with ``head_limit`` (bytes) and ``head_timeout``
    (seconds) on each request head; set both on a subclass (:func:`guarded_protocol`)."""

    head_limit = 0  # 0: no size cap
    head_timeout = 0.0  # 0: no time limit
    over_rate: ClassVar[Callable[[str], bool] | None] = None  # set once the app's limits exist
    trusted: ClassVar[frozenset[str] | None] = frozenset()  # proxies' addresses; None: all

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()
        over_rate, trusted = type(self).over_rate, type(self).trusted  # not bound to self
        if over_rate is not None and trusted is not None:
            peer = transport.get_extra_info("peername")
            host = peer[0] if isinstance(peer, tuple) else None
            self._refused = host is not None and host not in trusted and over_rate(host)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # answered once its request arrives, so the client reads the 429
            self._refused = False
            self._stop_timer()
            self.transport.write(OVER_RATE)
            self.transport.close()
            return
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
    """:class:`GuardedHttpTools` with these bounds, for ``uvicorn.Config(http=...)``; set its
    ``over_rate`` once the app's limits exist (see ``refuse_over_rate``)."""
    return type(
        "GuardedHttpTools",
        (GuardedHttpTools,),
        {"head_limit": head_limit, "head_timeout": head_timeout},
    )


def refuse_over_rate(
    protocol: type[GuardedHttpTools], over_rate: Callable[[str], bool], forwarded_allow: str
) -> None:
    """Refuse new connections of addresses over their connect rate (``over_rate(host)``),
    except from the trusted proxies of ``forwarded_allow`` (uvicorn's comma-separated
    FORWARDED_ALLOW_IPS; ``*`` or a network trusts too much to tell: then none is refused)."""
    entries = {entry.strip() for entry in forwarded_allow.split(",") if entry.strip()}
    protocol.trusted = None if any(e == "*" or "/" in e for e in entries) else frozenset(entries)
    protocol.over_rate = over_rate
