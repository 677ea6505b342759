"""The feed's gRPC contract, through generated stubs against a real feed process."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tickstream.v1 import feed_pb2, feed_pb2_grpc, tick_pb2

from tests.conftest import Stack, nats_args
from tests.support import (
    BTC_FILE,
    BTC_TICKS,
    RECORDED_TICKS,
    ServiceProcess,
    replay_args,
    start_feed,
    wait_head,
)

EVERY_TYPE = [tick_pb2.TICK_TYPE_TRADE, tick_pb2.TICK_TYPE_QUOTE, tick_pb2.TICK_TYPE_BOOK]


@pytest.fixture
async def stub(backbone_replay_stack: Stack) -> AsyncIterator[feed_pb2_grpc.FeedServiceStub]:
    async with grpc.aio.insecure_channel(backbone_replay_stack.feed_target) as channel:
        yield feed_pb2_grpc.FeedServiceStub(channel)


@pytest.fixture(scope="module", params=["memory", "nats"])
def small_history_feed(request: pytest.FixtureRequest) -> Iterator[ServiceProcess]:
    """A feed keeping 1,000 ticks: in memory, or as the limit of its JetStream stream."""
    backbone: list[str] = []
    if request.param == "nats":
        backbone = nats_args(request.getfixturevalue("nats_server"), "SMALL")
    feed = start_feed(*replay_args(BTC_FILE), "--history-size", "1000", *backbone)
    wait_head(feed, BTC_TICKS)
    yield feed
    feed.stop()


async def read(
    call: grpc.aio.UnaryStreamCall, count: int, within: float = 20
) -> list[feed_pb2.SubscribeResponse]:
    responses: list[feed_pb2.SubscribeResponse] = []
    async with asyncio.timeout(within):
        async for response in call:
            responses.append(response)
            if len(responses) >= count:
                break
    call.cancel()
    return responses


def ticks_of(responses: list[feed_pb2.SubscribeResponse]) -> list[tick_pb2.Tick]:
    return [t for r in responses if r.WhichOneof("event") == "ticks" for t in r.ticks.ticks]


async def test_list_symbols_and_health(
    stub: feed_pb2_grpc.FeedServiceStub, backbone_replay_stack: Stack
) -> None:
    reply = await stub.ListSymbols(feed_pb2.ListSymbolsRequest())
    assert [s.symbol for s in reply.symbols] == ["BTCUSDT", "ETHUSDT"]
    assert reply.symbols[0].price_scale == 8
    assert reply.symbols[0].source == "replay:binance-spot"
    assert len(reply.epoch) == 16
    async with grpc.aio.insecure_channel(backbone_replay_stack.feed_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "tickstream.v1.FeedService"):
            status = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert status.status == health_pb2.HealthCheckResponse.SERVING


async def test_earliest_trades_only_keeps_sequence_contiguous(
    stub: feed_pb2_grpc.FeedServiceStub,
) -> None:
    request = feed_pb2.SubscribeRequest(
        symbols=["BTCUSDT"], types=[tick_pb2.TICK_TYPE_TRADE], earliest=True
    )
    responses = await read(stub.Subscribe(request), 10)
    assert responses[0].WhichOneof("event") == "heartbeat", "every stream opens with a heartbeat"
    ticks = ticks_of(responses)
    assert ticks and all(t.HasField("trade") and t.symbol == "BTCUSDT" for t in ticks)
    assert [t.sequence for t in ticks] == list(range(1, len(ticks) + 1))
    assert all(a.offset < b.offset for a, b in itertools.pairwise(ticks))


async def test_snapshot_sends_latest_trade_and_quote_then_heartbeats(
    stub: feed_pb2_grpc.FeedServiceStub,
) -> None:
    request = feed_pb2.SubscribeRequest(symbols=["ETHUSDT", "BTCUSDT"], snapshot=True)
    responses = await read(stub.Subscribe(request), 3, within=10)
    kinds = [r.WhichOneof("event") for r in responses]
    # The replay is over: heartbeats follow, and, once its symbols are stale, their states.
    assert kinds[:2] == ["heartbeat", "ticks"], "snapshot first"
    assert set(kinds[2:]) <= {"heartbeat", "status"}
    beat = responses[0]
    snapshot = responses[1].ticks.ticks
    assert {(t.symbol, t.WhichOneof("body")) for t in snapshot} == {
        (s, k) for s in ("BTCUSDT", "ETHUSDT") for k in ("trade", "quote")
    }
    assert [t.offset for t in snapshot] == sorted(t.offset for t in snapshot)
    assert beat.heartbeat.head_offset >= RECORDED_TICKS  # the memory stack makes bars too


async def test_resume_after_offset_continues_exactly(stub: feed_pb2_grpc.FeedServiceStub) -> None:
    epoch = (await stub.ListSymbols(feed_pb2.ListSymbolsRequest())).epoch
    position = feed_pb2.StreamPosition(epoch=epoch, offset=1_000)
    request = feed_pb2.SubscribeRequest(
        symbols=["BTCUSDT", "ETHUSDT"], types=EVERY_TYPE, after=position
    )
    responses = await read(stub.Subscribe(request), 4)
    bases = responses[1].ticks.ticks  # each symbol's book at offset 1000 first
    assert {t.symbol for t in bases} == {"BTCUSDT", "ETHUSDT"}
    assert all(t.book.snapshot and t.offset <= 1_000 for t in bases)
    ticks = ticks_of(responses[2:])
    assert [t.offset for t in ticks[:100]] == list(range(1_001, 1_101))


@pytest.mark.parametrize(
    ("epoch", "offset", "reason", "goes_on_after"),
    [
        # Another epoch: from the oldest tick this epoch's history holds (all of it here).
        ("0123456789abcdef", 5, feed_pb2.RESET_REASON_EPOCH_CHANGED, 0),
        (None, 10**9, feed_pb2.RESET_REASON_OFFSET_AHEAD, None),  # None: the head
    ],
    ids=["other-epoch", "ahead"],
)
async def test_unusable_resume_point_gets_reset(
    stub: feed_pb2_grpc.FeedServiceStub,
    epoch: str | None,
    offset: int,
    reason: int,
    goes_on_after: int | None,
) -> None:
    current = (await stub.ListSymbols(feed_pb2.ListSymbolsRequest())).epoch
    position = feed_pb2.StreamPosition(epoch=epoch or current, offset=offset)
    responses = await read(
        stub.Subscribe(feed_pb2.SubscribeRequest(symbols=["BTCUSDT"], after=position)), 2
    )
    assert responses[1].WhichOneof("event") == "reset"
    assert responses[1].reset.reason == reason
    assert responses[1].reset.epoch == current
    head = responses[0].heartbeat.head_offset
    assert head >= RECORDED_TICKS  # the recording, and in the memory stack its bars
    assert responses[1].reset.head_offset == (head if goes_on_after is None else goes_on_after)


async def test_resume_older_than_history_gets_reset(small_history_feed: ServiceProcess) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{small_history_feed.port}") as channel:
        stub = feed_pb2_grpc.FeedServiceStub(channel)
        epoch = (await stub.ListSymbols(feed_pb2.ListSymbolsRequest())).epoch
        request = feed_pb2.SubscribeRequest(
            symbols=["BTCUSDT"], after=feed_pb2.StreamPosition(epoch=epoch, offset=10)
        )
        responses = await read(stub.Subscribe(request), 2)
        assert responses[1].reset.reason == feed_pb2.RESET_REASON_OFFSET_TOO_OLD
        earliest = feed_pb2.SubscribeRequest(symbols=["BTCUSDT"], types=EVERY_TYPE, earliest=True)
        first = await read(stub.Subscribe(earliest), 3)
        assert first[1].ticks.ticks[0].book.snapshot, "the book as of the start first"
        oldest = first[2].ticks.ticks[0].offset
        assert oldest == BTC_TICKS - 1_000 + 1, "earliest = oldest retained"
