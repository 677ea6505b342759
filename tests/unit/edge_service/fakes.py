"""Stand-ins for the shared upstreams, and helpers to read what a session queued."""

from __future__ import annotations

from dataclasses import dataclass, field

from tickstream.v1 import tick_pb2

from edge_service.encoding import EncodedTick, encode_tick
from edge_service.metrics import EdgeMetrics
from edge_service.outbox import Outbox
from edge_service.session import ClientSession
from edge_service.upstream import TickDispatch

EPOCH = "e1"


@dataclass(eq=False)
class FakeUpstream:
    """Stands in for SymbolUpstream: the attributes its listeners read; ``deliver`` and
    ``restart`` call them as the real one does."""

    symbol: str
    epoch: str | None = EPOCH
    watermark: int = 0
    latest: dict[str, EncodedTick] = field(default_factory=dict)
    stale_frame: bytes | None = None
    listeners: set = field(default_factory=set)  # type: ignore[type-arg]
    fan_outs: dict = field(default_factory=dict)  # type: ignore[type-arg]

    @property
    def symbols(self) -> list[str]:
        return [self.symbol]

    def snapshot(self, kinds: frozenset[str]) -> list[EncodedTick]:
        return sorted((t for k, t in self.latest.items() if k in kinds), key=lambda t: t.offset)

    def stale_frames(self) -> list[bytes]:
        return [] if self.stale_frame is None else [self.stale_frame]

    def deliver(self, ticks: list[EncodedTick], watermark: int) -> None:
        self.watermark = watermark
        dispatch = TickDispatch(ticks, self.epoch, watermark)
        for listener in list(self.listeners):
            listener.on_ticks(self, dispatch)

    def restart(self, epoch: str, head: int) -> None:
        self.epoch, self.watermark = epoch, head
        for listener in list(self.listeners):
            listener.on_reset(self, "epoch_changed", "feed restarted", [self.symbol])


def tick(symbol: str, offset: int, kind: str = "trade") -> EncodedTick:
    message = tick_pb2.Tick(symbol=symbol, offset=offset, sequence=offset)
    if kind == "trade":
        message.trade.price = "1"
    else:
        message.quote.bid_price = "1"
    return encode_tick(message, EPOCH)


def trades(upstream: FakeUpstream, offsets: list[int]) -> list[EncodedTick]:
    return [tick(upstream.symbol, o) for o in offsets]


def session(symbols: list[str], queue_limit: int = 1_000) -> ClientSession:
    metrics = EdgeMetrics()
    outbox = Outbox(
        event_limit=queue_limit, byte_limit=1_000_000, metrics=metrics, on_ready=lambda _: None
    )
    return ClientSession(
        symbols, frozenset({"trade", "quote"}), outbox=outbox, catchup_limit=100, metrics=metrics
    )


def written(client: ClientSession) -> bytes | None:
    """What the client's connection would be written next: queued bytes, else the final event
    once ended, else None."""
    chunk = client.outbox.take()[0]
    if chunk:
        return chunk
    final, client.outbox.final = client.outbox.final, None
    return final


def offsets_sent(client: ClientSession) -> list[int]:
    chunk = written(client)
    assert chunk is not None
    return [
        int(line.rsplit("-", 1)[1])
        for line in chunk.decode().splitlines()
        if line.startswith("id: ")
    ]


class FakeSink:
    """A connection that records writes; ``open`` False stands for a paused transport."""

    def __init__(self, open: bool = True) -> None:
        self.open = open
        self.writes: list[bytes] = []
        self.wakes = 0

    def writable(self) -> bool:
        return self.open

    def write(self, chunk: bytes) -> None:
        self.writes.append(chunk)

    def write_framed(self, framed: bytes) -> None:
        self.writes.append(framed)

    def wake(self) -> None:
        self.wakes += 1
