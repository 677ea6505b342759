"""Producers through tickstream.v1.IngestService/Publish, with a real feed and grpcio clients:
bad batches are refused whole with a status naming the tick and field, rights and limits are
enforced, and nothing else is disturbed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from tickstream.v1 import feed_pb2, feed_pb2_grpc, ingest_pb2, ingest_pb2_grpc, tick_pb2

from tests.support import ServiceProcess, start_feed

Metadata = Sequence[tuple[str, str]]


def trade(symbol: str, n: int, price: str | None = None) -> ingest_pb2.TickDraft:
    body = tick_pb2.Trade(price=price or f"{100 + n}.25", size="1.5", trade_id=str(n))
    return ingest_pb2.TickDraft(symbol=symbol, trade=body, dedup_id=str(n))


def batch(*ticks: ingest_pb2.TickDraft, batch_id: int = 0) -> ingest_pb2.PublishRequest:
    return ingest_pb2.PublishRequest(ticks=list(ticks), batch_id=batch_id)


class Refused(Exception):
    """The feed ended a Publish call with a status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


async def publish(
    target: str, requests: Sequence[ingest_pb2.PublishRequest], metadata: Metadata = ()
) -> list[ingest_pb2.PublishResponse]:
    """Send ``requests`` on one Publish stream, each after the previous one's ack; the acks.
    Raises Refused with the call's status when the feed ends it (a write into a call the feed
    already ended fails locally, so the status is read from the call itself)."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = ingest_pb2_grpc.IngestServiceStub(channel).Publish(metadata=metadata)
        acks = []
        try:
            async with asyncio.timeout(15):
                for request in requests:
                    await call.write(request)
                    ack = await call.read()
                    if ack is grpc.aio.EOF:
                        break
                    acks.append(ack)
                else:
                    await call.done_writing()
                    assert await call.read() is grpc.aio.EOF
        except grpc.aio.AioRpcError:
            pass
        code = await call.code()
        if code != grpc.StatusCode.OK:
            raise Refused(code, await call.details() or "")
        return acks


async def refused(
    target: str, requests: Sequence[ingest_pb2.PublishRequest], metadata: Metadata = ()
) -> Refused:
    """The status the feed ends a Publish call of ``requests`` with (AssertionError if it
    accepts them all). Sent with the blocking client in a thread: grpc-aio's client can report
    a write into a call the server already ended as INTERNAL instead of the server's status
    (grpc/grpc issue 36066), which made the token checks flaky."""
    return await asyncio.to_thread(_refused_blocking, target, requests, metadata)


def _refused_blocking(
    target: str, requests: Sequence[ingest_pb2.PublishRequest], metadata: Metadata
) -> Refused:
    with grpc.insecure_channel(target) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        try:
            for _ in stub.Publish(iter(requests), metadata=tuple(metadata), timeout=15):
                pass
        except grpc.RpcError as error:
            return Refused(error.code(), error.details() or "")  # type: ignore[attr-defined]
    raise AssertionError("the feed accepted every batch")


async def symbols_of(target: str, metadata: Metadata = ()) -> list[str]:
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await feed_pb2_grpc.FeedServiceStub(channel).ListSymbols(
            feed_pb2.ListSymbolsRequest(), metadata=metadata, timeout=5
        )
    return [info.symbol for info in reply.symbols]


@pytest.fixture(scope="module")
def producers_feed() -> Iterator[ServiceProcess]:
    feed = start_feed("--source", "none", "--max-batch", "50", "--max-symbols", "6")
    yield feed
    feed.stop()


def quote(symbol: str, bid: str, ask: str) -> ingest_pb2.TickDraft:
    body = tick_pb2.Quote(bid_price=bid, bid_size="1", ask_price=ask, ask_size="2")
    return ingest_pb2.TickDraft(symbol=symbol, quote=body)


BAD_BATCHES = {
    "float-looking price": (
        [trade("VICTIM", 1), trade("VICTIM", 2, "1.5e3")],
        "ticks[1].trade.price",
    ),
    "non-decimal price": ([trade("VICTIM", 1, "twelve")], "ticks[0].trade.price"),
    "empty symbol": ([trade("VICTIM", 1), trade("VICTIM", 2), trade("", 3)], "ticks[2].symbol"),
    "symbol breaking the rule": ([trade("btc/usdt", 1)], "ticks[0].symbol"),
    "bid above ask": (
        [trade("VICTIM", 1), quote("VICTIM", "10.5", "10.4")],
        "ticks[1].quote.bid_price",
    ),
    "empty batch": ([], "ticks: the batch is empty"),
    "batch over the size limit": (
        [trade("VICTIM", n) for n in range(51)],
        "ticks[50]: the batch holds 51",
    ),
    "missing body": ([trade("VICTIM", 1), ingest_pb2.TickDraft(symbol="VICTIM")], "ticks[1].body"),
}


async def _subscribe_all(target: str, symbol: str, count: int) -> list[tick_pb2.Tick]:
    async with grpc.aio.insecure_channel(target) as channel:
        call = feed_pb2_grpc.FeedServiceStub(channel).Subscribe(
            feed_pb2.SubscribeRequest(symbols=[symbol], earliest=True)
        )
        ticks: list[tick_pb2.Tick] = []
        async with asyncio.timeout(20):
            async for response in call:
                ticks.extend(response.ticks.ticks)
                if len(ticks) >= count:
                    call.cancel()
                    break
    return ticks


async def test_each_invalid_batch_is_refused_whole_naming_tick_and_field(
    producers_feed: ServiceProcess,
) -> None:
    """Acceptance 3: every bad batch ends its call with INVALID_ARGUMENT naming the tick index
    and field; nothing of it is stored; a healthy producer and subscriber carry on."""
    target = f"127.0.0.1:{producers_feed.port}"
    await publish(target, [batch(trade("GOOD", 0))])
    healthy_count = 400

    async def healthy_producer() -> None:
        requests = [
            batch(*(trade("GOOD", n) for n in range(b * 20 + 1, b * 20 + 21)), batch_id=b)
            for b in range(20)
        ]
        for request in requests:
            await publish(target, [request])
            await asyncio.sleep(0.01)

    subscriber = asyncio.create_task(_subscribe_all(target, "GOOD", healthy_count + 1))
    producer = asyncio.create_task(healthy_producer())
    for name, (drafts, expected) in BAD_BATCHES.items():
        # A valid batch first: it stays stored; the bad one after it is refused whole.
        error = await refused(target, [batch(trade("GOOD2", len(name))), batch(*drafts)])
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, name
        assert error.details.startswith(expected), (name, error.details)
        assert "nothing of it stored" in error.details or name == "empty batch"
    await asyncio.wait_for(producer, 30)
    ticks = await asyncio.wait_for(subscriber, 30)
    assert [t.trade.trade_id for t in ticks] == [str(n) for n in range(healthy_count + 1)]
    assert [t.sequence for t in ticks] == list(range(1, healthy_count + 2))
    symbols = await symbols_of(target)
    assert "VICTIM" not in symbols, "no tick of a refused batch was stored"
    assert {"GOOD", "GOOD2"} <= set(symbols)
    assert producers_feed.alive


async def test_the_symbol_cap_refuses_new_symbols_with_resource_exhausted(
    producers_feed: ServiceProcess,
) -> None:
    target = f"127.0.0.1:{producers_feed.port}"
    known = await symbols_of(target)
    fresh = [f"CAP{n}" for n in range(6 - len(known))]
    await publish(target, [batch(*(trade(s, 1) for s in fresh))])
    error = await refused(target, [batch(trade("CAP.OVER", 1))])
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "cap of 6" in error.details
    assert "CAP.OVER" not in await symbols_of(target)


async def test_duplicates_are_acknowledged_not_stored(producers_feed: ServiceProcess) -> None:
    target = f"127.0.0.1:{producers_feed.port}"
    first = batch(*(trade("GOOD2", n) for n in range(1000, 1010)), batch_id=7)
    acks = await publish(target, [first, first])
    assert (acks[0].accepted, acks[0].duplicates, acks[0].batch_id) == (10, 0, 7)
    assert (acks[1].accepted, acks[1].duplicates) == (0, 10)
    assert acks[1].last_offset == acks[0].last_offset and acks[0].epoch


SUBSCRIBER = "subscriber-token-6f1c2a9e8b7d4c3e"
PRODUCER = "producer-token-2b8e4d6f0a1c3e5f"
SLOW = "slow-producer-token-9c1d7e3f5a2b4c6d"


@pytest.fixture(scope="module")
def guarded_feed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    tokens: Path = tmp_path_factory.mktemp("tokens") / "tokens.json"
    clients = [
        {"name": "edge", "token": SUBSCRIBER, "symbols": ["*"]},
        {"name": "fx-desk", "token": PRODUCER, "publish": ["FX.*"], "max_batch": 5, "max_rate": 40},
        {"name": "slow-desk", "token": SLOW, "publish": ["SLOW.*"], "max_rate": 3},
    ]
    tokens.write_text(json.dumps({"clients": clients}))
    feed = start_feed("--source", "none", "--client-tokens", str(tokens))
    yield feed
    feed.stop()


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


async def test_publish_rights_and_limits_come_from_the_tokens_file(
    guarded_feed: ServiceProcess,
) -> None:
    """Acceptance 4: no token, a subscribe-only token, a symbol outside the token's patterns,
    and a producer past its batch and rate limits each get their status; no token is logged."""
    target = f"127.0.0.1:{guarded_feed.port}"
    ok = batch(trade("FX.EURUSD", 1))
    for metadata in ((), bearer("not-a-known-token")):
        error = await refused(target, [ok], metadata)
        assert error.code == grpc.StatusCode.UNAUTHENTICATED
    error = await refused(target, [ok], bearer(SUBSCRIBER))
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert "may not publish" in error.details
    error = await refused(
        target, [batch(trade("FX.EURUSD", 2), trade("BTCUSDT", 3))], bearer(PRODUCER)
    )
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert error.details.startswith("ticks[1].symbol")
    acks = await publish(target, [ok], bearer(PRODUCER))
    assert acks[0].accepted == 1
    error = await refused(
        target, [batch(*(trade("FX.GBPUSD", n) for n in range(6)))], bearer(PRODUCER)
    )
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit of 5" in (error.details)
    # Past its rate a producer is slowed, not refused: 100 ticks at 40/s with a second's burst.
    flood = [batch(*(trade("FX.USDJPY", b * 5 + n) for n in range(5))) for b in range(20)]
    started = asyncio.get_running_loop().time()
    acks = await publish(target, flood, bearer(PRODUCER))
    assert sum(a.accepted for a in acks) == 100
    assert asyncio.get_running_loop().time() - started >= 1.2, "held to about 40 ticks/s"
    error = await refused(target, [batch(*(trade("SLOW.X", n) for n in range(4)))], bearer(SLOW))
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "never fits 'slow-desk''s rate limit of 3 ticks/s" in error.details
    assert await symbols_of(target, bearer(SUBSCRIBER)) == ["FX.EURUSD", "FX.USDJPY"]
    output = guarded_feed.output() + "\n".join(guarded_feed.lines)
    assert not any(token in output for token in (SUBSCRIBER, PRODUCER, SLOW))


async def test_unknown_fields_of_a_draft_do_not_reach_its_tick(
    producers_feed: ServiceProcess,
) -> None:
    """Regression: a draft's bytes become its tick's, so fields the feed does not know (here
    the reserved sequence number 2 and an unknown field 99) would have ridden along into every
    subscriber's Tick; they are discarded."""
    target = f"127.0.0.1:{producers_feed.port}"
    draft = trade("GOOD2", 5000).SerializeToString()
    forged = draft + b"\x10\x07" + b"\x9a\x06\x05forge"  # sequence=7, field 99 = "forge"
    request = b"\x0a" + bytes([len(forged)]) + forged
    async with grpc.aio.insecure_channel(target) as channel:
        publish_raw = channel.stream_stream(
            "/tickstream.v1.IngestService/Publish",
            request_serializer=lambda raw: raw,
            response_deserializer=ingest_pb2.PublishResponse.FromString,
        )
        call = publish_raw()
        await call.write(request)
        ack = await asyncio.wait_for(call.read(), 10)
        await call.done_writing()
    assert ack.accepted == 1
    async with grpc.aio.insecure_channel(target) as channel:
        after = feed_pb2.StreamPosition(epoch=ack.epoch, offset=ack.last_offset - 1)
        request = feed_pb2.SubscribeRequest(symbols=["GOOD2"], after=after)
        call = feed_pb2_grpc.FeedServiceStub(channel).Subscribe(request)
        async with asyncio.timeout(10):
            async for response in call:
                if response.ticks.ticks:
                    tick = response.ticks.ticks[0]
                    break
        call.cancel()
    assert tick.offset == ack.last_offset
    assert tick.trade.trade_id == "5000" and tick.sequence != 7
    assert b"forge" not in tick.SerializeToString()


async def test_malformed_protobuf_is_invalid_argument_and_a_refusal_ends_the_source(
    producers_feed: ServiceProcess,
) -> None:
    """Regression: bytes that are not a PublishRequest got grpc's UNKNOWN and a logged
    traceback; and a producer refused for a bad batch was reported stale (a lost source),
    which could hold /readyz at 503. Now: INVALID_ARGUMENT, no traceback, source ended."""
    target = f"127.0.0.1:{producers_feed.port}"
    metadata = (("tickstream-producer", "garbler"),)

    def send_raw() -> Refused:
        with grpc.insecure_channel(target) as channel:
            publish_raw = channel.stream_stream(
                "/tickstream.v1.IngestService/Publish",
                request_serializer=lambda raw: raw,
                response_deserializer=ingest_pb2.PublishResponse.FromString,
            )
            try:
                list(publish_raw(iter([b"\x0a\xff\xff\xff\xff\x0f"]), metadata=metadata))
            except grpc.RpcError as error:
                return Refused(error.code(), error.details() or "")  # type: ignore[attr-defined]
        raise AssertionError("accepted")

    error = await asyncio.to_thread(send_raw)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a tickstream.v1.PublishRequest" in error.details
    assert not any("Traceback" in line for line in producers_feed.lines)
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await feed_pb2_grpc.FeedServiceStub(channel).ListSources(
            feed_pb2.ListSourcesRequest(), timeout=5
        )
    garbler = next(s for s in reply.sources if s.name == "publish:garbler")
    assert garbler.state == feed_pb2.SOURCE_STATE_ENDED and garbler.detail.startswith("refused")
