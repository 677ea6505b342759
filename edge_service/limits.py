"""Limits that keep one client from hurting the others: streams per process, per client address
and per token, a connect rate per address, and request line and header sizes.

Every limit of :class:`StreamLimits` is off at 0. Refusals are problem documents: 503 when the
process is full, 429 when one client asks for more than its share, both with ``Retry-After``
(RFC 9110 section 10.2.3; RFC 6585 section 4 for 429).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from .problems import Problem, problem_response


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


def client_key(host: str, ipv6_prefix: int) -> str:
    """The address the per-client limits count ``host`` under: an IPv4 address as it is (also
    when IPv4-mapped), an IPv6 one as its ``/ipv6_prefix`` network (one subscriber usually
    holds a whole /64, so one address each would multiply its budget); anything else as is."""
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))


class StreamLimits:
    """Admission of new SSE streams. ``connect_rate`` is connects per second per address
    (a token bucket holding ``connect_burst``); the others are counts of open streams."""

    def __init__(
        self,
        *,
        max_streams: int = 0,
        per_address: int = 0,
        per_token: int = 0,
        connect_rate: float = 0,
        connect_burst: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_streams, self.per_address, self.per_token = max_streams, per_address, per_token
        self.connect_rate, self.connect_burst = connect_rate, max(1, connect_burst)
        self._clock = clock
        self._open = 0
        self._by_address: dict[str, int] = {}
        self._by_token: dict[str, int] = {}
        self._buckets: dict[str, _Bucket] = {}

    def check_rate(self, address: str) -> None:
        """Spend one connect of ``address``; raises Problem 429 when its bucket is empty."""
        if not self.connect_rate:
            return
        now = self._clock()
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = _Bucket(float(self.connect_burst), now)
        bucket.tokens = min(
            self.connect_burst, bucket.tokens + (now - bucket.at) * self.connect_rate
        )
        bucket.at = now
        if bucket.tokens < 1:
            wait = math.ceil((1 - bucket.tokens) / self.connect_rate)
            raise _too_many(
                "connect-rate",
                f"more than {self.connect_rate:g} connects per second from this address",
                wait,
            )
        bucket.tokens -= 1

    def over_rate(self, address: str) -> bool:
        """True while ``address`` has no connect left (its next SSE connect would get 429);
        spends nothing. For refusing its connections before any parsing (``head_guard``)."""
        bucket = self._buckets.get(address) if self.connect_rate else None
        if bucket is None:
            return False
        return bucket.tokens + (self._clock() - bucket.at) * self.connect_rate < 1

    def admit(self, address: str, token_key: str | None) -> Callable[[], None]:
        """Count a new stream of ``address`` (and ``token_key``, when authenticated); the
        function that un-counts it. Raises Problem 503 (process full) or 429 (a client's share
        used up)."""
        if self.max_streams and self._open >= self.max_streams:
            raise Problem(
                503,
                "too-many-streams",
                "Too many streams",
                f"this edge holds its maximum of {self.max_streams} streams; retry shortly",
                headers={"Retry-After": "5"},
            )
        if self.per_address and self._by_address.get(address, 0) >= self.per_address:
            raise _too_many(
                "streams-per-client",
                f"at most {self.per_address} open streams per client address",
                5,
            )
        if token_key and self.per_token and self._by_token.get(token_key, 0) >= self.per_token:
            raise _too_many(
                "streams-per-token", f"at most {self.per_token} open streams per token", 5
            )
        self._open += 1
        self._by_address[address] = self._by_address.get(address, 0) + 1
        if token_key:
            self._by_token[token_key] = self._by_token.get(token_key, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self._open -= 1
            _decrement(self._by_address, address)
            if token_key:
                _decrement(self._by_token, token_key)

        return release

    def prune(self) -> None:
        """Forget connect buckets that have refilled (bounds memory by recent clients)."""
        if not self.connect_rate:
            return
        now = self._clock()
        full = [
            a
            for a, b in self._buckets.items()
            if b.tokens + (now - b.at) * self.connect_rate >= self.connect_burst
        ]
        for address in full:
            del self._buckets[address]


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


def _too_many(kind: str, detail: str, retry_after: int) -> Problem:
    return Problem(
        429, kind, "Too many requests", detail, headers={"Retry-After": str(retry_after)}
    )


class RequestSizeLimit:
    """ASGI middleware: 414 when the request target (path and query) is longer than
    ``max_target`` bytes, 431 when the header lines hold more than ``max_headers`` bytes
    (RFC 9110 section 15.5.15; RFC 6585 section 5), as problem documents."""

    def __init__(self, app: ASGIApp, max_target: int, max_headers: int) -> None:
        self.app, self.max_target, self.max_headers = app, max_target, max_headers

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine: it hands back the next app's (or the problem's) awaitable, so no
        # frame of this middleware stays suspended for a stream's lifetime (about 300 bytes).
        if scope["type"] == "http":
            target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            headers = sum(len(k) + len(v) + 4 for k, v in scope["headers"])
            problem = None
            if self.max_target and target > self.max_target:
                problem = Problem(
                    414,
                    "uri-too-long",
                    "URI too long",
                    f"the request target is {target} bytes; at most {self.max_target}",
                )
            elif self.max_headers and headers > self.max_headers:
                problem = Problem(
                    431,
                    "headers-too-large",
                    "Request header fields too large",
                    f"the headers are {headers} bytes; at most {self.max_headers}",
                )
            if problem is not None:
                return problem_response(problem, scope.get("path", ""))(scope, receive, send)
        return self.app(scope, receive, send)
