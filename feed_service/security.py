"""Who may use the feed: TLS (optionally mutual) on the gRPC port, and per-client tokens.

Tokens travel in the ``authorization`` metadata as ``Bearer <token>`` (the gRPC convention for
bearer credentials). The tokens file is JSON::

    {"clients": [{"name": "edge-1", "token": "...", "symbols": ["*"]},
                 {"name": "quant-team", "token": "...", "symbols": ["BTC*", "ETH*"]},
                 {"name": "pricer", "token": "...", "publish": ["FX.*"],
                  "max_rate": 50000, "max_batch": 500}]}

``symbols`` (or its synonym ``subscribe``) are the shell-style patterns a client may subscribe to
(default ``["*"]``, or none when the entry has ``publish``); ``publish`` the patterns it may
publish (default: none, so a subscriber token cannot publish). ``max_rate`` (ticks per second,
a one-second burst) and ``max_batch`` (ticks per batch) limit a producer: past them Publish ends
with RESOURCE_EXHAUSTED. A call to ``tickstream.v1.FeedService`` or ``IngestService`` without a
known token ends with UNAUTHENTICATED (checked by :class:`TokenInterceptor`, before the method
runs); a Subscribe or Publish naming a symbol its token does not allow ends with
PERMISSION_DENIED (checked by the servicers, which see the requests). Health and reflection stay
open, so orchestrators and tools can probe the feed.
"""

from __future__ import annotations

import fnmatch
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from .config import FeedSettings

log = logging.getLogger(__name__)

GUARDED_PREFIXES = ("/tickstream.v1.FeedService/", "/tickstream.v1.IngestService/")


@dataclass(frozen=True, slots=True)
class ClientGrant:
    """A client named in the tokens file: the symbol patterns it may subscribe to and publish,
    and its producer limits (None: unlimited)."""

    name: str
    symbols: tuple[str, ...]
    publish: tuple[str, ...] = ()
    max_rate: float | None = None
    max_batch: int | None = None

    def allows(self, symbol: str) -> bool:
        """May subscribe to ``symbol``."""
        return any(fnmatch.fnmatchcase(symbol, pattern) for pattern in self.symbols)

    def may_publish(self, symbol: str) -> bool:
        return any(fnmatch.fnmatchcase(symbol, pattern) for pattern in self.publish)


class TokenTable:
    """Known client tokens. Raises ValueError for a malformed tokens file."""

    def __init__(self, entries: Iterable[tuple[str, ClientGrant]]) -> None:
        self._entries = list(entries)

    @classmethod
    def from_file(cls, path: Path) -> TokenTable:
        """Read a tokens file (module docstring). Raises ValueError naming the first problem:
        not JSON, no ``clients`` list, an entry without a non-empty string ``name`` and
        ``token``, or ``symbols`` that is not a list of strings (a bare string such as
        ``"BTC*"`` would otherwise read as the patterns B, T, C and *)."""
        try:
            clients = json.loads(path.read_text())["clients"]
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a tokens file ({type(error).__name__})") from None
        if not isinstance(clients, list):
            raise ValueError(f"{path}: clients must be a list")
        entries = []
        for index, client in enumerate(clients):
            if not isinstance(client, dict):
                raise ValueError(f"{path}: clients[{index}] must be an object")
            name, token = client.get("name"), client.get("token")
            if not (isinstance(name, str) and name and isinstance(token, str) and token):
                raise ValueError(f"{path}: clients[{index}] needs a non-empty name and token")
            entries.append((token, _grant(path, index, name, client)))
        return cls(entries)

    def lookup(self, metadata: Iterable[tuple[str, Any]] | None) -> ClientGrant | None:
        """The grant of the bearer token in ``metadata``, None when absent or unknown. Every
        known token is compared in constant time."""
        token = bearer_token(metadata)
        if token is None:
            return None
        found = None
        for known, grant in self._entries:
            if hmac.compare_digest(known.encode(), token.encode()):
                found = grant
        return found


def _patterns(path: Path, index: int, client: dict[str, Any], key: str, default: Any) -> Any:
    value = client.get(key, default)
    if not (isinstance(value, list) and all(isinstance(p, str) for p in value)):
        raise ValueError(f"{path}: clients[{index}].{key} must be a list of strings")
    return tuple(value)


def _limit(path: Path, index: int, client: dict[str, Any], key: str) -> Any:
    value = client.get(key)
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
    ):
        raise ValueError(f"{path}: clients[{index}].{key} must be a positive number")
    return value


def _grant(path: Path, index: int, name: str, client: dict[str, Any]) -> ClientGrant:
    """One entry's grant; a bare string for patterns (``"BTC*"``, which would read as the
    patterns B, T, C and *) or a non-positive limit is a ValueError."""
    publish = _patterns(path, index, client, "publish", [])
    default_subscribe = [] if "publish" in client else ["*"]
    key = "subscribe" if "subscribe" in client else "symbols"
    symbols = _patterns(path, index, client, key, default_subscribe)
    max_batch = _limit(path, index, client, "max_batch")
    return ClientGrant(
        name,
        symbols,
        publish,
        _limit(path, index, client, "max_rate"),
        int(max_batch) if max_batch is not None else None,
    )


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


REFUSALS = {
    "no_token": "the call carried no token in its authorization metadata",
    "unknown_token": "the token the call carried is not in --client-tokens",
}
"""Why a call is refused before any method runs: cause -> what it means."""


class RefusalLog:
    """Says why a client address is refused once per address and cause, not at every attempt
    (an edge with a wrong token retries every second or so; two misconfigured edges on one
    host alternate causes), and counts every refusal in ``on_refused(cause)``. A pair refused
    again after ``quiet`` seconds without refusals is logged again; at most ``limit`` pairs are
    remembered (past it, all are forgotten)."""

    def __init__(
        self, on_refused: Callable[[str], None], quiet: float = 60.0, limit: int = 4096
    ) -> None:
        self._last: dict[tuple[str, str], float] = {}  # (host, cause) -> when last refused
        self._on_refused = on_refused
        self._quiet, self._limit = quiet, limit

    def refused(self, peer: str, cause: str) -> None:
        """A call from ``peer`` (gRPC's ``ipv4:H:P`` form) was refused for ``cause``."""
        self._on_refused(cause)
        key, now = (peer_host(peer), cause), time.monotonic()
        last = self._last.get(key)
        if len(self._last) >= self._limit and last is None:
            self._last.clear()
        self._last[key] = now
        if last is not None and now - last < self._quiet:
            return
        log.warning(
            "refused a client at %s: %s (%s; not logged again for this address and cause "
            "until a quiet minute)",
            key[0],
            cause,
            REFUSALS.get(cause, cause),
        )


def peer_host(peer: str) -> str:
    """``ipv4:127.0.0.1:5000`` -> ``127.0.0.1``; ``ipv6:[::1]:5000`` -> ``::1``."""
    _, _, address = peer.partition(":")
    host = address.rpartition(":")[0] or address
    return host.strip("[]")


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Ends FeedService and IngestService calls without a known bearer token with
    UNAUTHENTICATED, telling ``refusals``."""

    def __init__(self, table: TokenTable, refusals: RefusalLog) -> None:
        self._table = table
        self._refusals = refusals

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method  # type: ignore[attr-defined]
        if handler is None or not method.startswith(GUARDED_PREFIXES):
            return handler
        metadata = handler_call_details.invocation_metadata  # type: ignore[attr-defined]
        if self._table.lookup(metadata) is not None:
            return handler
        cause = "unknown_token" if bearer_token(metadata) else "no_token"
        return _refusal(handler, cause, self._refusals)


def _refusal(
    handler: grpc.RpcMethodHandler, cause: str, refusals: RefusalLog
) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that ends the call with UNAUTHENTICATED."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        refusals.refused(context.peer(), cause)
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            f"{REFUSALS[cause]} (send 'authorization: Bearer <token>' with a known token)",
        )

    return _same_shape(handler, refuse)


def _same_shape(handler: grpc.RpcMethodHandler, behavior: Any) -> grpc.RpcMethodHandler:
    """A handler of ``handler``'s kind and (de)serializers running ``behavior``."""

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(behavior, **kwargs)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(behavior, **kwargs)
    return grpc.unary_unary_rpc_method_handler(behavior, **kwargs)


def server_credentials(settings: FeedSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from ``--tls-cert``/``--tls-key`` (PEM files), requiring client
    certificates signed by ``--tls-client-ca`` when given (mutual TLS); None without a cert.
    Raises ValueError when only one of cert and key is given, OSError for unreadable files."""
    if not settings.tls_cert and not settings.tls_key:
        if settings.tls_client_ca:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if not (settings.tls_cert and settings.tls_key):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )
