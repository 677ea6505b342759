"""Feed configuration: one pydantic-settings class, flags mirrored by ``FEED_*`` variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode

from tickstream_common.settings import LogFormatSetting, LogLevel, service_config, split_commas

from .bars import interval_ns

BINANCE_DEPTHS = (0, 5, 10, 20, 50, 100, 500, 1000, 5000)
"""--binance-depth: what Binance's snapshot endpoint takes as ``limit``; 0 for no books."""


class FeedSettings(BaseSettings):
    """tickstream feed: numbers ticks from a source and streams them over gRPC.

    Every flag has an environment variable with the ``FEED_`` prefix (``--port`` is ``FEED_PORT``;
    list values are comma-separated there).
    """

    model_config = service_config("FEED_", "python -m feed_service")

    host: str = Field("127.0.0.1", description="Interface the gRPC server binds.")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    source: Literal["synthetic", "replay", "binance", "none"] = Field(
        "synthetic",
        description="Built-in source of ticks; none = only producers' Publish streams feed it.",
    )
    replay_path: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Recorded Binance files or folders of them (repeatable; replay source).",
    )
    speed: float = Field(
        1.0, ge=0, description="Replay pacing factor: 2 = twice as fast; 0 = as fast as possible."
    )
    loop: bool = Field(False, description="Replay again from the start when the data ends.")
    symbols: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["AAPL", "MSFT", "BTCUSD"],
        description="Symbols of the synthetic and binance sources, comma-separated.",
    )
    binance_url: str = Field(
        "wss://stream.binance.com:9443",
        description="Base URL of Binance's public WebSocket API (binance source); the combined "
        "stream /stream?streams=... is opened below it.",
    )
    binance_rest_url: str = Field(
        "https://api.binance.com",
        description="Base URL of Binance's REST API (binance source): order-book snapshots "
        "come from /api/v3/depth below it.",
    )
    binance_depth: int = Field(
        1000,
        description="Levels a side in the binance source's order-book snapshots: 5, 10, 20, "
        "50, 100, 500, 1000 or 5000; 0: no books, trades and quotes only.",
    )
    bar_intervals: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["1s", "1m"],
        description="Bars (OHLCV candles) made from every symbol's trades, comma-separated "
        "intervals <1-9999><s|m|h|d>; empty = none.",
    )
    seed: int = Field(7, description="Seed of the synthetic source (same seed, same ticks).")
    rate: float = Field(
        50.0, gt=0, le=5_000_000, description="Synthetic ticks per second over all symbols."
    )
    history_size: int = Field(
        200_000,
        ge=1,
        description="Ticks kept for resume and replay from earliest (in memory; with --backbone "
        "nats also the stream's message limit).",
    )
    history_age: float = Field(
        0.0,
        ge=0,
        description="With --backbone nats: seconds the stream keeps a tick (its max age; "
        "0 = no age limit, only --history-size).",
    )
    backbone: Literal["memory", "nats"] = Field(
        "memory",
        description="Where ticks are numbered and kept: memory = this process (a new epoch at "
        "every start); nats = a NATS JetStream stream shared by every feed replica.",
    )
    nats_url: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["nats://127.0.0.1:4222"],
        description="NATS servers of --backbone nats, comma-separated nats://HOST:PORT.",
    )
    nats_stream: str = Field(
        "TICKS",
        pattern=r"^[A-Za-z0-9_-]{1,32}$",
        description="JetStream stream of --backbone nats: subjects <stream in lower case>."
        "<symbol>.<type>, symbol metadata in the key-value bucket <stream>_SYMBOLS.",
    )
    nats_replicas: int = Field(
        1,
        ge=1,
        le=5,
        description="Replicas of the stream when this feed creates it (3 on a 3-node cluster).",
    )
    heartbeat_interval: float = Field(
        1.0, gt=0, le=60, description="Seconds of silence after which a stream gets a Heartbeat."
    )
    stale_after: float = Field(
        10.0, gt=0, description="Seconds without a tick after which a symbol or source is stale."
    )
    stale_after_symbol: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        description="Per-symbol stale times overriding --stale-after, e.g. BTCUSDT=2,ILLIQ=300.",
    )
    max_symbols: int = Field(
        10_000,
        ge=1,
        description="Most symbols the feed serves; producers' new symbols past it "
        "are refused (RESOURCE_EXHAUSTED).",
    )
    max_batch: int = Field(
        1_000, ge=1, le=100_000, description="Most ticks in one Publish batch (INVALID_ARGUMENT)."
    )
    dedup_window: int = Field(
        1_000_000,
        ge=0,
        description="(symbol, dedup_id) pairs remembered feed-wide to drop resent ticks "
        "(0 = off); about 200 bytes each.",
    )
    metrics: bool = Field(
        True, description="Serve Prometheus metrics on --metrics-port (--no-metrics: off)."
    )
    metrics_port: int = Field(
        9464, ge=0, le=65535, description="Port of the Prometheus metrics (0 = a free one)."
    )
    grace_period: float = Field(
        5.0, ge=0, description="Seconds SIGTERM waits for streams to end before cancelling them."
    )
    log_level: LogLevel = "INFO"
    log_format: LogFormatSetting = "text"
    tls_cert: Path | None = Field(None, description="PEM certificate chain: serve gRPC over TLS.")
    tls_key: Path | None = Field(None, description="PEM private key of --tls-cert.")
    tls_client_ca: Path | None = Field(
        None, description="PEM CA bundle: require client certificates it signed (mutual TLS)."
    )
    client_tokens: Path | None = Field(
        None,
        description="JSON file of client tokens, their subscribe and publish symbol patterns "
        "and limits; when set, FeedService and IngestService calls need "
        "'authorization: Bearer <token>' metadata.",
    )

    @field_validator("nats_url", mode="after")
    @classmethod
    def _nats_urls(cls, urls: list[str]) -> list[str]:
        """Each nats://HOST[:PORT] (or tls://): a typo fails at start, not in a retry loop."""
        for url in urls:
            parts = urlsplit(url)
            try:
                parts.port  # noqa: B018 - raises ValueError for a port that is not a number
            except ValueError:
                raise ValueError(f"{url!r}: the port is not a number") from None
            if parts.scheme not in ("nats", "tls") or not parts.hostname or parts.path:
                raise ValueError(f"{url!r} is not nats://HOST:PORT")
        if not urls:
            raise ValueError("name at least one NATS server")
        return urls

    @model_validator(mode="after")
    def _atomic_batches(self) -> FeedSettings:
        """JetStream stores at most 1,000 messages atomically: a producer's batch must fit."""
        if self.backbone == "nats" and self.max_batch > 1_000:
            raise ValueError("--max-batch: at most 1000 with --backbone nats (atomic batches)")
        return self

    @field_validator("binance_depth", mode="after")
    @classmethod
    def _binance_depth(cls, depth: int) -> int:
        if depth not in BINANCE_DEPTHS:
            raise ValueError(f"{depth} is not one of {', '.join(map(str, BINANCE_DEPTHS))}")
        return depth

    @field_validator("binance_rest_url", mode="after")
    @classmethod
    def _binance_rest_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not http(s)://HOST[:PORT]")
        return url

    @field_validator("bar_intervals", mode="after")
    @classmethod
    def _bar_intervals(cls, intervals: list[str]) -> list[str]:
        for interval in intervals:
            interval_ns(interval)  # raises ValueError naming it
        return list(dict.fromkeys(intervals))

    @field_validator("symbols", "replay_path", "nats_url", "bar_intervals", mode="before")
    @classmethod
    def _split_lists(cls, value: Any) -> Any:
        return split_commas(value)

    @field_validator("stale_after_symbol", mode="before")
    @classmethod
    def _split_pairs(cls, value: Any) -> Any:
        """``"A=2,B=30"`` into ``{"A": "2", "B": "30"}``; a part without ``=`` is an error."""
        if not isinstance(value, str):
            return value
        pairs = {}
        for part in split_commas(value):
            symbol, sep, seconds = part.partition("=")
            if not sep:
                raise ValueError(f"{part!r} is not SYMBOL=SECONDS")
            pairs[symbol.strip()] = seconds.strip()
        return pairs
