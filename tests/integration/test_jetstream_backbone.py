"""Feed replicas on one NATS JetStream stream (issue 12): real nats-server processes (one, or a
three-node cluster with stream replicas = 3), real feed processes, grpcio clients. Every
replica serves the same history, offsets and epoch; two replicas taking producers for one
symbol keep its sequence contiguous; restarts keep the epoch and every resume point; losing a
NATS node loses nothing a producer was told is stored."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import nats
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tickstream.v1 import feed_pb2, feed_pb2_grpc, ingest_pb2, ingest_pb2_grpc, tick_pb2

from feed_service.errors import AlreadyStored
from feed_service.jetstream_writer import LogWriter
from feed_service.subjects import TickSubjects
from tests.conftest import nats_args
from tests.cutting_proxy import cutting_proxy
from tests.integration.test_publish import publish
from tests.support import (
    BTC_FILE,
    BTC_TICKS,
    LIVE_REPLAY,
    ServiceProcess,
    metric_value,
    nats_url,
    replay_args,
    services,
    start_feed,
    start_nats,
    start_nats_cluster,
    wait_head,
)

NO_SOURCE = ("--source", "none")


@pytest.fixture
def one_node(tmp_path: Path) -> Iterator[ServiceProcess]:
    server = start_nats(tmp_path / "nats")
    with services(server):
        yield server


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[ServiceProcess]]:
    nodes = start_nats_cluster(tmp_path / "cluster")
    with services(*nodes):
        yield nodes


def target(feed: ServiceProcess) -> str:
    return f"127.0.0.1:{feed.port}"


async def ticks_from(
    feed: ServiceProcess,
    count: int,
    *,
    symbols: tuple[str, ...] = ("BTCUSDT",),
    after: feed_pb2.StreamPosition | None = None,
) -> tuple[list[feed_pb2.SubscribeResponse], list[tick_pb2.Tick]]:
    """The responses of a Subscribe (from earliest unless ``after``) until ``count`` ticks, of
    every type the replay stores (trades, quotes, books: its offsets have no holes)."""
    every = [tick_pb2.TICK_TYPE_TRADE, tick_pb2.TICK_TYPE_QUOTE, tick_pb2.TICK_TYPE_BOOK]
    request = feed_pb2.SubscribeRequest(symbols=symbols, types=every)
    if after is not None:
        request.after.CopyFrom(after)
    else:
        request.earliest = True
    responses: list[feed_pb2.SubscribeResponse] = []
    ticks: list[tick_pb2.Tick] = []
    async with grpc.aio.insecure_channel(target(feed)) as channel:
        call = feed_pb2_grpc.FeedServiceStub(channel).Subscribe(request)
        async with asyncio.timeout(60):
            async for response in call:
                responses.append(response)
                # a resume first gets the book as of its start: a value, not a later tick
                start = after.offset if after is not None else 0
                ticks.extend(t for t in response.ticks.ticks if t.offset > start)
                if len(ticks) >= count:
                    break
        call.cancel()
    return responses, ticks


async def list_symbols(feed: ServiceProcess) -> feed_pb2.ListSymbolsResponse:
    async with grpc.aio.insecure_channel(target(feed)) as channel:
        return await feed_pb2_grpc.FeedServiceStub(channel).ListSymbols(
            feed_pb2.ListSymbolsRequest()
        )


def retries(feed: ServiceProcess, cause: str) -> float:
    """The feed's count of batches the backbone sent again for ``cause``."""
    text = httpx.get(f"http://127.0.0.1:{feed.metrics_port}/metrics", timeout=5).text
    wanted = f'tickstream_feed_backbone_retries_total{{cause="{cause}"}}'
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(wanted))


def trade(symbol: str, producer: str, n: int) -> ingest_pb2.TickDraft:
    body = tick_pb2.Trade(price=f"{100 + n % 50}.5", size="1", trade_id=f"{producer}-{n}")
    return ingest_pb2.TickDraft(symbol=symbol, trade=body, dedup_id=f"{producer}-{n}")


def producer_batches(producer: str, count: int) -> list[ingest_pb2.PublishRequest]:
    """``count`` batches of 1 to 12 SHARED trades (every fifth with an OTHER trade too)."""
    batches, n = [], 0
    for index in range(count):
        drafts = []
        for _ in range(1 + (index * 7) % 12):
            drafts.append(trade("SHARED", producer, n))
            n += 1
        if index % 5 == 0:
            drafts.append(trade("OTHER", producer, n))
            n += 1
        batches.append(ingest_pb2.PublishRequest(ticks=drafts, batch_id=index))
    return batches


def assert_one_sequence(ticks: list[tick_pb2.Tick], symbol: str) -> list[str]:
    """``symbol``'s trades are numbered 1, 2, 3... in offset order; their trade ids."""
    mine = [t for t in ticks if t.symbol == symbol]
    assert [t.sequence for t in mine] == list(range(1, len(mine) + 1))
    assert all(a.offset < b.offset for a, b in itertools.pairwise(mine))
    return [t.trade.trade_id for t in mine]


async def test_replicas_serve_one_history(one_node: ServiceProcess) -> None:
    url = nats_args(one_node, "TICKS")
    a = start_feed(*replay_args(BTC_FILE), *url)
    with services(a):
        b = start_feed(*NO_SOURCE, *url)
        with services(b):
            wait_head(a, BTC_TICKS)
            listed = [await list_symbols(feed) for feed in (a, b)]
            for reply in listed:
                for info in reply.symbols:
                    info.ClearField("last_tick_time")  # when this replica read the last tick
            assert listed[0] == listed[1], "the same symbols, metadata and epoch on both"
            info = listed[1].symbols[0]
            assert (info.symbol, info.price_scale, info.source) == (
                "BTCUSDT",
                8,
                "replay:binance-spot",
            )
            _, from_a = await ticks_from(a, 5_000)
            _, from_b = await ticks_from(b, 5_000)
            assert [t.offset for t in from_a[:5_000]] == list(range(1, 5_001))
            assert [t.SerializeToString() for t in from_a[:5_000]] == [
                t.SerializeToString() for t in from_b[:5_000]
            ]
            # A tick published through B is served by A at the offset B acknowledged.
            ack = (await publish(target(b), producer_batches("solo", 1)))[0]
            assert ack.epoch == listed[0].epoch and ack.last_offset == BTC_TICKS + 2  # 2 ticks
            _, shared = await ticks_from(a, 1, symbols=("SHARED",))
            assert (shared[0].offset, shared[0].sequence) == (BTC_TICKS + 1, 1)


async def test_two_producers_of_one_symbol_through_two_replicas_share_one_sequence(
    one_node: ServiceProcess,
) -> None:
    url = nats_args(one_node, "TICKS")
    a, b = start_feed(*NO_SOURCE, *url), start_feed(*NO_SOURCE, *url)
    with services(a, b):
        acks = await asyncio.gather(
            publish(target(a), producer_batches("left", 120)),
            publish(target(b), producer_batches("right", 120)),
        )
        stored = sum(ack.accepted for ack in itertools.chain(*acks))
        _, ticks = await ticks_from(b, stored, symbols=("SHARED", "OTHER"))
        assert [t.offset for t in ticks] == list(range(1, stored + 1)), "no gap, no repeat"
        ids = assert_one_sequence(ticks, "SHARED") + assert_one_sequence(ticks, "OTHER")
        for producer in ("left", "right"):
            sent = [d.trade.trade_id for r in producer_batches(producer, 120) for d in r.ticks]
            theirs = [i for i in ids if i.startswith(f"{producer}-")]
            assert sorted(theirs, key=lambda i: int(i.split("-")[1])) == sent, "each once"
        conflicts = sum(retries(feed, "conflict") for feed in (a, b))
        assert conflicts > 0, "the two writers did contend for the symbol"
        shared = [t.trade.trade_id for t in ticks if t.symbol == "SHARED"]
        for producer in ("left", "right"):
            order = [int(i.split("-")[1]) for i in shared if i.startswith(f"{producer}-")]
            assert order == sorted(order), "a producer's ticks keep their order"


async def test_restarting_every_replica_keeps_the_epoch_and_every_resume_point(
    one_node: ServiceProcess,
) -> None:
    url = nats_args(one_node, "TICKS")
    a, b = start_feed(*LIVE_REPLAY, *url), start_feed(*NO_SOURCE, *url)
    try:
        _, before = await ticks_from(b, 300, symbols=("BTCUSDT", "ETHUSDT"))
        epoch = (await list_symbols(b)).epoch
        # One by one: B restarts while A keeps publishing; then both at once, killed.
        b.stop()
        b = start_feed(*NO_SOURCE, *url)
        assert (await list_symbols(b)).epoch == epoch
        for feed in (a, b):
            feed.signal(signal.SIGKILL)
            feed.popen.wait()
        b, a = start_feed(*NO_SOURCE, *url), start_feed(*LIVE_REPLAY, *url)
        assert (await list_symbols(a)).epoch == epoch, "the stream, not the process, is the epoch"
        last = before[-1]
        position = feed_pb2.StreamPosition(epoch=epoch, offset=last.offset)
        responses, after = await ticks_from(
            b, 2_000, after=position, symbols=("BTCUSDT", "ETHUSDT")
        )
    finally:
        for feed in (a, b):
            feed.stop()
    assert not [r for r in responses if r.HasField("reset")], "no reset after any restart"
    assert [t.offset for t in after[:2_000]] == list(range(last.offset + 1, last.offset + 2_001))
    sequences: dict[tuple[str, str], int] = {}
    for tick in before + after:
        key = (tick.symbol, tick.WhichOneof("body") or "")
        assert tick.sequence == sequences.get(key, tick.sequence - 1) + 1, key
        sequences[key] = tick.sequence


async def publish_from(
    address: str, batches: list[ingest_pb2.PublishRequest], acked: list[ingest_pb2.PublishResponse]
) -> None:
    """Send ``batches[len(acked):]`` on one Publish call, each after the previous one's ack,
    appending the acks to ``acked``. Raises AioRpcError when the call fails."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = ingest_pb2_grpc.IngestServiceStub(channel).Publish()
        async with asyncio.timeout(30):
            for request in batches[len(acked) :]:
                await call.write(request)
                ack = await call.read()
                if ack is grpc.aio.EOF:
                    raise grpc.aio.AioRpcError(
                        await call.code(), grpc.aio.Metadata(), grpc.aio.Metadata(), "ended"
                    )
                acked.append(ack)
            await call.done_writing()
            assert await call.read() is grpc.aio.EOF


async def stream_leader(server: ServiceProcess, stream: str) -> str:
    """The name of the node leading ``stream`` (asked through a real NATS client)."""
    client = await nats.connect(nats_url(server))
    try:
        info = await client.jetstream().stream_info(stream)
        assert info.cluster is not None and info.cluster.leader
        return info.cluster.leader
    finally:
        await client.close()


async def test_losing_a_nats_node_loses_nothing_acknowledged(
    cluster: list[ServiceProcess],
) -> None:
    url = [*nats_args(cluster[0], "TICKS"), "--nats-url", nats_url(*cluster)]
    url += ["--nats-replicas", "3"]
    a, b = start_feed(*NO_SOURCE, *url), start_feed(*NO_SOURCE, *url)
    with services(a, b):
        batches = producer_batches("p", 300)
        acked: list[ingest_pb2.PublishResponse] = []

        async def produce() -> None:
            """Every batch until acknowledged. When a call fails, a new one starts from the
            first batch not acknowledged: it may have been stored, and its dedup ids make
            sending it again safe."""
            for _ in range(100):
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await publish_from(target(a), batches, acked)
                    return
                await asyncio.sleep(0.2)
            raise AssertionError("publishing never resumed")

        producing = asyncio.create_task(produce())
        while len(acked) < 60:  # noqa: ASYNC110 - polling a list
            await asyncio.sleep(0.01)
        leader = await stream_leader(cluster[0], "TICKS")
        victim = next(node for node in cluster if node.name == leader)
        victim.signal(signal.SIGKILL)
        victim.popen.wait()
        await asyncio.wait_for(producing, 120)
        sent = sum(len(r.ticks) for r in batches)
        assert sum(ack.accepted + ack.duplicates for ack in acked) == sent
        _, ticks = await ticks_from(b, sent, symbols=("SHARED", "OTHER"))
        assert [t.offset for t in ticks] == list(range(1, sent + 1))
        ids = assert_one_sequence(ticks, "SHARED") + assert_one_sequence(ticks, "OTHER")
        assert sorted(ids) == sorted(d.trade.trade_id for r in batches for d in r.ticks)


async def health_status(feed: ServiceProcess) -> int:
    async with grpc.aio.insecure_channel(target(feed)) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        return int(reply.status)


async def wait_health(feed: ServiceProcess, status: int, within: float = 20) -> None:
    async with asyncio.timeout(within):
        while await health_status(feed) != status:  # noqa: ASYNC110 - polling a server
            await asyncio.sleep(0.1)


async def test_a_replica_cut_off_from_nats_is_not_serving_until_it_is_back(
    tmp_path: Path,
) -> None:
    store = tmp_path / "nats"
    server = start_nats(store)
    try:
        feed = start_feed(*NO_SOURCE, *nats_args(server, "TICKS"))
        with services(feed):
            server.signal(signal.SIGKILL)
            server.popen.wait()
            await wait_health(feed, health_pb2.HealthCheckResponse.NOT_SERVING)
            server = start_nats(store, port=server.port)  # the same node back, its stream kept
            await wait_health(feed, health_pb2.HealthCheckResponse.SERVING)
            ack = (await publish(target(feed), producer_batches("back", 1)))[0]
            assert ack.accepted == 2
    finally:
        server.stop()


async def test_a_resent_batch_is_a_duplicate_on_any_replica_and_after_a_restart(
    one_node: ServiceProcess,
) -> None:
    """Dedup ids travel with the ticks in the stream: every replica learns them, and a
    restarted one relearns them while it reads its history back."""
    url = nats_args(one_node, "TICKS")
    a, b = start_feed(*NO_SOURCE, *url), start_feed(*NO_SOURCE, *url)
    try:
        batch = producer_batches("dup", 3)
        first = await publish(target(a), batch)
        assert sum(ack.accepted for ack in first) == 13
        await asyncio.sleep(0.5)  # B reads them from the stream
        again = await publish(target(b), batch)
        assert [(ack.accepted, ack.duplicates) for ack in again] == [(0, 2), (0, 8), (0, 3)]
        a.stop()
        a = start_feed(*NO_SOURCE, *url)
        after_restart = await publish(target(a), batch)
        assert sum(ack.duplicates for ack in after_restart) == 13
    finally:
        a.stop()
        b.stop()


async def test_a_replica_does_not_change_the_limits_of_an_existing_stream(
    one_node: ServiceProcess,
) -> None:
    url = nats_args(one_node, "TICKS")
    a = start_feed(*NO_SOURCE, *url, "--history-size", "5000")
    with services(a):
        b = start_feed(*NO_SOURCE, *url, "--history-size", "10")
        with services(b):
            b.wait_for_line(r"stream TICKS keeps 5000 messages .* not this feed's 10")
            client = await nats.connect(nats_url(one_node))
            try:
                info = await client.jetstream().stream_info("TICKS")
            finally:
                await client.close()
            assert info.config.max_msgs == 5000


async def test_a_batch_whose_acknowledgement_is_lost_with_the_connection_is_stored_once(
    one_node: ServiceProcess,
) -> None:
    """Regression (found by the chaos run): the feed's connection to NATS broke after a
    batch's commit went out, so the batch was stored but its acknowledgement lost; the writer
    took that for a failed attempt and stored the batch again (five trades appeared twice).
    Fix: an attempt that failed with any connection error is looked for before the next."""
    with cutting_proxy(one_node.port) as proxy:
        url = ["--backbone", "nats", "--nats-url", f"nats://127.0.0.1:{proxy.port}"]
        feed = start_feed(*NO_SOURCE, *url, "--nats-stream", "TICKS")
        with services(feed):
            await publish(target(feed), producer_batches("warm", 1))  # the stream exists
            proxy.cut_after(b"Nats-Batch-Commit")
            batch = [ingest_pb2.PublishRequest(ticks=[trade("LOST", "p", n) for n in range(5)])]
            acks = await publish(target(feed), batch)
            assert proxy.triggered.is_set() and proxy.cuts == 1
            assert [(ack.accepted, ack.duplicates) for ack in acks] == [(5, 0)]
            wait_head(feed, 7)  # 2 warm-up trades and the 5
            await asyncio.sleep(1.0)
            assert metric_value(feed, "tickstream_feed_head_offset") == 7, "stored once"
            _, ticks = await ticks_from(feed, 5, symbols=("LOST",))
            print("RETRIES", retries(feed, "error"), retries(feed, "unsure"), feed.output())
            assert retries(feed, "error") + retries(feed, "unsure") >= 1
    assert assert_one_sequence(ticks, "LOST") == [f"p-{n}" for n in range(5)]


async def test_a_batch_stored_through_one_writer_is_refused_whole_through_another(
    one_node: ServiceProcess,
) -> None:
    """Regression (found by the chaos run): a producer resent an unacknowledged batch through
    the other replica before that one had read the first copy from the stream, and the batch
    was stored twice. Each tick with a dedup id now carries ``Nats-Msg-Id``
    ``<symbol>:<dedup id>``, so JetStream refuses a second copy whichever replica sends it:
    here a second writer, which knows nothing of the first, gets AlreadyStored, nothing more is
    stored, and the drafts keep their dedup ids for the caller to filter."""
    feed = start_feed(*NO_SOURCE, *nats_args(one_node, "TICKS"))  # creates the stream
    with services(feed):
        first, second = (
            await nats.connect(nats_url(one_node)),
            await nats.connect(nats_url(one_node)),
        )
        try:
            writers = [
                LogWriter(nc, nc.jetstream(), "TICKS", TickSubjects("TICKS"))
                for nc in (first, second)
            ]
            batch = [trade("TWICE", "p", n) for n in range(3)]
            last = await writers[0].append(
                [ingest_pb2.TickDraft.FromString(d.SerializeToString()) for d in batch], 1
            )
            single = [trade("ONCE", "p", 0)]
            await writers[0].append(
                [ingest_pb2.TickDraft.FromString(d.SerializeToString()) for d in single], 1
            )
            for drafts in (batch, single):
                with pytest.raises(AlreadyStored):
                    await writers[1].append(drafts, 1)
                assert all(d.dedup_id for d in drafts), "given back with their dedup ids"
            info = await first.jetstream().stream_info("TICKS")
            assert (last, info.state.last_seq) == (3, 4), "nothing stored twice"
        finally:
            await first.close()
            await second.close()


async def test_a_resend_the_window_forgot_is_a_duplicate_and_with_dedup_off_is_stored(
    one_node: ServiceProcess,
) -> None:
    """Regression (found by a breaker session): with JetStream refusing a known dedup id for
    two minutes, a resend the feed's own window had forgotten got UNAVAILABLE until then, and
    with --dedup-window 0 every resend did. Now the first is a duplicate (new ticks beside it
    stored) and the second is stored again, as the README says of a window of 0."""
    small = start_feed(*NO_SOURCE, *nats_args(one_node, "TICKS"), "--dedup-window", "2")
    with services(small):
        await publish(target(small), [ingest_pb2.PublishRequest(ticks=[trade("DW", "x", 0)])])
        others = [ingest_pb2.PublishRequest(ticks=[trade("DW", "o", n)]) for n in range(3)]
        await publish(target(small), others)  # the window of 2 forgets x-0
        again = [trade("DW", "x", 0), trade("DW", "n", 0)]
        acks = await publish(target(small), [ingest_pb2.PublishRequest(ticks=again)])
        assert [(a.accepted, a.duplicates) for a in acks] == [(1, 1)]
    off = start_feed(*NO_SOURCE, *nats_args(one_node, "TICKS"), "--dedup-window", "0")
    with services(off):
        resent = [ingest_pb2.PublishRequest(ticks=[trade("OFF", "y", 0)])] * 2
        acks = await publish(target(off), resent)
        assert [(a.accepted, a.duplicates) for a in acks] == [(1, 0), (1, 0)]


async def opening_of(feed: ServiceProcess, after: feed_pb2.StreamPosition) -> list[str]:
    """The kinds of a Subscribe's first two responses (SHARED trades after ``after``)."""
    request = feed_pb2.SubscribeRequest(symbols=["SHARED"], types=[tick_pb2.TICK_TYPE_TRADE])
    request.after.CopyFrom(after)
    kinds: list[str] = []
    async with grpc.aio.insecure_channel(target(feed)) as channel:
        call = feed_pb2_grpc.FeedServiceStub(channel).Subscribe(request, timeout=40)
        async for response in call:
            kinds.append(str(response.WhichOneof("event")))
            if len(kinds) == 2:
                call.cancel()
                break
    return kinds


async def test_a_replica_behind_the_backbone_refuses_a_resume_point_it_has_not_read(
    cluster: list[ServiceProcess],
) -> None:
    """A cursor that another replica handed out is genuine: a replica that cannot read that far
    answers UNAVAILABLE (the edge's client reconnects with it), not an ``offset_ahead`` reset
    back to its own head, which would hand the client ticks it already has. A cursor past the
    backbone's end still gets ``offset_ahead``."""
    options = ["--nats-replicas", "3"]
    a = start_feed(*NO_SOURCE, *nats_args(cluster[0], "TICKS"), *options)
    b = start_feed(*NO_SOURCE, *nats_args(cluster[1], "TICKS"), *options)
    with services(a, b):
        first = (await publish(target(a), producer_batches("p", 1)))[0]
        await ticks_from(b, 1, symbols=("SHARED",))
        cluster[1].signal(signal.SIGSTOP)  # b's only node: b reads nothing more
        try:
            acks: list[ingest_pb2.PublishResponse] = []
            for _ in range(20):  # through a leader election if cluster[1] led the stream
                with contextlib.suppress(grpc.aio.AioRpcError):
                    acks = await publish(target(a), producer_batches("q", 1))
                    break
                await asyncio.sleep(0.5)
            assert acks and acks[0].last_offset > first.last_offset
            ahead = feed_pb2.StreamPosition(epoch=first.epoch, offset=acks[0].last_offset)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await opening_of(b, ahead)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value
        finally:
            cluster[1].signal(signal.SIGCONT)
        assert "reset" not in await opening_of(b, ahead)  # read once its node is back
        beyond = feed_pb2.StreamPosition(epoch=first.epoch, offset=acks[0].last_offset + 100)
        assert await opening_of(b, beyond) == ["heartbeat", "reset"]
