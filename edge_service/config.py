"""Edge configuration: one pydantic-settings class, flags mirrored by ``EDGE_*`` variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode

from tickstream_common.settings import LogFormatSetting, LogLevel, service_config, split_commas


class EdgeSettings(BaseSettings):
    """tickstream edge: fans the feed's ticks out to Server-Sent Events clients.

    Every flag has an environment variable with the ``EDGE_`` prefix (``--port`` is ``EDGE_PORT``).
    """

    model_config = service_config("EDGE_", "python -m edge_service")

    host: str = Field("127.0.0.1", description="Interface the HTTP server binds.")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port; 0 picks a free one.")
    feed_target: str = Field(
        "127.0.0.1:50051",
        description="The feed's gRPC address, HOST:PORT; several feed replicas comma-separated "
        "(A:P,B:P): the edge uses the first that answers and moves to the next when it stops.",
    )
    workers: int = Field(
        1, ge=1, le=256, description="Processes on the one port (SO_REUSEPORT), each a whole edge."
    )
    max_symbols: int = Field(
        200, ge=1, le=10_000, description="Most symbols one SSE stream may ask for."
    )
    client_queue_events: int = Field(
        20_000,
        ge=10,
        description="Events a client may have queued before it is disconnected as a slow consumer.",
    )
    client_queue_bytes: int = Field(
        8 * 1024 * 1024,
        ge=4096,
        description="Bytes a client may have queued before it is disconnected as a slow consumer.",
    )
    catchup_buffer_events: int = Field(
        50_000,
        ge=10,
        description="Live events held per symbol while a resuming client catches up from history.",
    )
    ping_interval: float = Field(
        15.0, gt=0, le=15, description="Seconds between SSE comment heartbeats (at most 15)."
    )
    retry_ms: int = Field(
        2_000, ge=0, description="The SSE retry: hint sent at stream start (milliseconds)."
    )
    send_timeout: float = Field(
        30.0, gt=0, description="Seconds one write to a client may block before it is dropped."
    )
    socket_send_buffer: int = Field(
        262_144,
        ge=0,
        description="Kernel send buffer per client connection in bytes (0 = the OS default).",
    )
    upstream_linger: float = Field(
        5.0, ge=0, description="Seconds an upstream stays open after its last client leaves."
    )
    upstream_stall_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds of silence (the feed heartbeats every second) after which an "
        "upstream stream is presumed dead and reopened.",
    )
    upstream_ready_timeout: float = Field(
        5.0, gt=0, description="Seconds a new SSE request waits for its upstream to connect."
    )
    feed_check_interval: float = Field(
        0.5, gt=0, description="Seconds between health checks of the feed (readiness)."
    )
    log_level: LogLevel = "INFO"
    log_format: LogFormatSetting = "text"
    auth: Literal["off", "jwt"] = Field(
        "off", description="Client authentication: off, or JWT bearer tokens on /sse and /symbols."
    )
    jwt_secret: SecretStr | None = Field(
        None, description="HS256 shared secret (prefer the EDGE_JWT_SECRET variable to a flag)."
    )
    jwt_public_key: Path | None = Field(
        None, description="PEM public key file for RS256 or ES256 tokens."
    )
    jwt_jwks: Path | None = Field(
        None, description="JWKS file (RFC 7517) for RS256 or ES256 tokens, keys chosen by kid."
    )
    jwt_audience: str | None = Field(None, description="Required aud claim, if set.")
    jwt_issuer: str | None = Field(None, description="Required iss claim, if set.")
    jwt_leeway: float = Field(
        10.0, ge=0, le=300, description="Seconds of clock skew allowed for exp and nbf."
    )
    feed_token: SecretStr | None = Field(
        None, description="Bearer token for the feed (prefer the EDGE_FEED_TOKEN variable)."
    )
    feed_tls_ca: Path | None = Field(
        None, description="PEM CA bundle to verify the feed's TLS certificate (enables TLS)."
    )
    feed_tls_cert: Path | None = Field(
        None, description="PEM client certificate for mutual TLS with the feed."
    )
    feed_tls_key: Path | None = Field(None, description="PEM private key of --feed-tls-cert.")
    max_streams: int = Field(
        0, ge=0, description="Most SSE streams this process holds; beyond, 503 (0 = no cap)."
    )
    max_streams_per_client: int = Field(
        0, ge=0, description="Most open streams per client address; beyond, 429 (0 = off)."
    )
    max_streams_per_token: int = Field(
        0, ge=0, description="Most open streams per token subject; beyond, 429 (0 = off)."
    )
    ipv6_prefix: int = Field(
        64,
        ge=1,
        le=128,
        description="IPv6 clients count against the per-address limits by this prefix (a /64 "
        "is one subscriber's usual allocation).",
    )
    connect_rate: float = Field(
        0, ge=0, description="SSE connects per second per client address; beyond, 429 (0 = off)."
    )
    connect_burst: int = Field(20, ge=1, description="Connects allowed at once above the rate.")
    max_request_target: int = Field(
        8192, ge=0, description="Bytes of path and query; beyond, 414 (0 = off)."
    )
    max_header_bytes: int = Field(
        16384, ge=0, description="Bytes of request headers; beyond, 431 (0 = off)."
    )
    header_timeout: float = Field(
        10.0,
        ge=0,
        description="Seconds a request head may take to arrive; then the connection is closed "
        "(slowloris; 0 = no limit).",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins allowed to read the edge cross-origin, comma-separated "
        "(empty: none). '*' allows any origin but then never with credentials.",
    )

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        return split_commas(value)
