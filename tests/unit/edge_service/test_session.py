"""ClientSession: ordered merge of several symbols, slow-consumer policy, resets."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tickstream.v1 import tick_pb2

from edge_service.encoding import EncodedTick, encode_tick
from edge_service.metrics import EdgeMetrics
from edge_service.outbox import Outbox
from edge_service.session import ClientSession
from edge_service.upstream import TickDispatch

EPOCH = "e1"


@dataclass
class FakeUpstream:
    """Stands in for SymbolUpstream: the attributes a session reads."""

    symbol: str
    epoch: str | None = EPOCH
    watermark: int = 0
    latest: dict[str, EncodedTick] = field(default_factory=dict)
    stale_frame: bytes | None = None

    def snapshot(self, kinds: frozenset[str]) -> list[EncodedTick]:
        return [t for k, t in self.latest.items() if k in kinds]


def tick(symbol: str, offset: int, kind: str = "trade") -> EncodedTick:
    message = tick_pb2.Tick(symbol=symbol, offset=offset, sequence=offset)
    if kind == "trade":
        message.trade.price = "1"
    else:
        message.quote.bid_price = "1"
    return encode_tick(message, EPOCH)


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


def deliver(
    client: ClientSession, upstream: FakeUpstream, offsets: list[int], watermark: int
) -> None:
    upstream.watermark = watermark
    client.on_ticks(upstream, TickDispatch([tick(upstream.symbol, o) for o in offsets]))  # type: ignore[arg-type]


def offsets_sent(client: ClientSession) -> list[int]:
    chunk = written(client)
    assert chunk is not None
    return [
        int(line.rsplit("-", 1)[1])
        for line in chunk.decode().splitlines()
        if line.startswith("id: ")
    ]


def test_two_symbols_are_released_in_offset_order_only_when_both_passed() -> None:
    a, b = FakeUpstream("A", watermark=4), FakeUpstream("B", watermark=4)
    client = session(["A", "B"])
    client.begin_live([a, b], snapshot=False)  # type: ignore[list-item]
    deliver(client, a, [5, 9], watermark=9)
    assert not client.outbox.queued, "B may still have a tick below 9"
    deliver(client, b, [6, 8], watermark=8)
    assert offsets_sent(client) == [5, 6, 8]
    deliver(client, b, [], watermark=10)  # progress only
    assert offsets_sent(client) == [9]
    assert client.cursor == 9


def test_single_symbol_passes_ticks_straight_through_and_skips_old_ones() -> None:
    a = FakeUpstream("A", watermark=10)
    client = session(["A"])
    client.begin_live([a], snapshot=False)  # type: ignore[list-item]
    deliver(client, a, [9, 11, 12], watermark=12)
    assert offsets_sent(client) == [11, 12]


def test_snapshot_comes_first_in_offset_order() -> None:
    a = FakeUpstream(
        "A", watermark=10, latest={"trade": tick("A", 7), "quote": tick("A", 3, "quote")}
    )
    client = session(["A"])
    client.begin_live([a], snapshot=True)  # type: ignore[list-item]
    chunk = written(client)
    assert chunk is not None and b"id: " not in chunk, "snapshots do not move the cursor"
    data = [json.loads(line[6:]) for line in chunk.decode().splitlines() if line.startswith("data")]
    assert [int(d["offset"]) for d in data] == [3, 7]


def test_slow_consumer_is_disconnected_with_a_reason() -> None:
    a = FakeUpstream("A")
    client = session(["A"], queue_limit=10)
    client.begin_live([a], snapshot=False)  # type: ignore[list-item]
    deliver(client, a, list(range(1, 12)), watermark=11)
    final = written(client)
    assert final is not None and final.startswith(b"event: disconnect")
    assert json.loads(final.decode().split("data: ")[1])["reason"] == "slow_consumer"
    assert written(client) is None


def test_feed_restart_sends_one_reset_then_new_epoch_ticks() -> None:
    a, b = FakeUpstream("A", watermark=50), FakeUpstream("B", watermark=50)
    client = session(["A", "B"])
    client.begin_live([a, b], snapshot=False)  # type: ignore[list-item]
    for upstream in (a, b):
        upstream.epoch, upstream.watermark = "e2", 3
        client.on_reset(upstream, "epoch_changed", "feed restarted")  # type: ignore[arg-type]
    chunk = written(client)
    assert chunk is not None
    assert chunk.count(b"event: reset") == 1
    assert b"id: e2-3" in chunk
    deliver(client, a, [4], watermark=4)
    deliver(client, b, [], watermark=4)
    assert offsets_sent(client) == [4]


def test_feed_restart_on_two_symbols_resets_after_the_later_restart_point() -> None:
    """Regression: the reset id came from the first symbol to see the new epoch, so ticks of the
    other symbol between the two restart points were never sent yet counted as delivered."""
    a, b = FakeUpstream("A", watermark=50), FakeUpstream("B", watermark=50)
    client = session(["A", "B"])
    client.begin_live([a, b], snapshot=False)  # type: ignore[list-item]
    a.epoch, a.watermark = "e2", 3
    client.on_reset(a, "epoch_changed", "feed restarted")  # type: ignore[arg-type]
    a.watermark = 5
    client.on_ticks(a, TickDispatch([tick("A", 4), tick("A", 5)]))  # type: ignore[arg-type]
    assert not client.outbox.queued, "no reset before every symbol is in the new epoch"
    b.epoch, b.watermark = "e2", 6
    client.on_reset(b, "epoch_changed", "feed restarted")  # type: ignore[arg-type]
    chunk = written(client)
    assert chunk is not None and chunk.count(b"event: reset") == 1
    assert b"id: e2-6" in chunk, "the cursor is the later restart point"
    deliver(client, a, [7], watermark=7)
    deliver(client, b, [], watermark=7)
    assert offsets_sent(client) == [7]


def test_a_client_behind_gets_quotes_conflated_and_every_trade() -> None:
    a = FakeUpstream("A")
    client = session(["A"], queue_limit=10)
    client.begin_live([a], snapshot=False)  # type: ignore[list-item]
    deliver(client, a, [1, 2, 3, 4, 5, 6], watermark=6)  # 6 > 10 // 2: now behind
    a.watermark = 9
    client.on_ticks(  # type: ignore[arg-type]
        a,
        TickDispatch([tick("A", 7, "quote"), tick("A", 8, "quote"), tick("A", 9, "trade")]),
    )
    a.watermark = 10
    client.on_ticks(a, TickDispatch([tick("A", 10, "quote")]))  # type: ignore[arg-type]
    assert offsets_sent(client) == [1, 2, 3, 4, 5, 6, 9, 10]
    assert not client.outbox.behind, "caught up: no longer behind"
