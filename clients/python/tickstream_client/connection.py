"""Channels, call metadata and reconnect backoff shared by the subscriber and the publisher."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import grpc

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    # Notice a silently dead connection: ping every 10 s, give up 5 s after an unanswered ping
    # (the feed accepts pings every 10 s or more, also without calls).
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Let our own backoff pace reconnects, not gRPC's (its default starts at 1 s and grows to
    # 120 s, far too slow after a feed restart).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 3_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]
PRODUCER_METADATA = "tickstream-producer"


def open_channel(
    target: str,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A channel to ``target`` ("host:port"): TLS when ``credentials`` is given (e.g.
    ``grpc.ssl_channel_credentials(ca)``), plaintext otherwise. ``options`` override
    :data:`CHANNEL_OPTIONS` by name. Must be called with an event loop running."""
    merged = dict(CHANNEL_OPTIONS)
    merged.update(options)
    pairs = list(merged.items())
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=pairs)
    return grpc.aio.secure_channel(target, credentials, options=pairs)


def call_metadata(token: str | None, producer: str | None = None) -> tuple[tuple[str, str], ...]:
    """``authorization: Bearer <token>`` and ``tickstream-producer: <producer>``, each when set."""
    pairs: list[tuple[str, str]] = []
    if token:
        pairs.append(("authorization", f"Bearer {token}"))
    if producer:
        pairs.append((PRODUCER_METADATA, producer))
    return tuple(pairs)


class Backoff:
    """Jittered exponential delays between reconnect attempts.

    Attempt ``n`` (0-based, counted since the last :meth:`reset`) waits a random time in the
    upper half of ``min(maximum, initial * 2**n)`` seconds, so many clients losing the same feed
    do not return at the same instant.
    """

    def __init__(
        self, initial: float = 0.1, maximum: float = 3.0, rng: random.Random | None = None
    ) -> None:
        if not 0 < initial <= maximum:
            raise ValueError("backoff needs 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; counts the attempt."""
        ceiling = min(self.maximum, self.initial * 2 ** min(self.attempt, 32))
        self.attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """The connection works again: the next failure starts from ``initial``."""
        self.attempt = 0
