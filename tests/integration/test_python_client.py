"""The Python client library (clients/python) against real feeds with producers only
(``--source none``): dropped connections, a feed restart, a stalled feed, a producer killed
mid-stream. The subscriber must see every tick once or a ``reset``; nothing is stored twice."""

from __future__ import annotations

import asyncio
import csv
import itertools
import json
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import tickstream_client as ts
from google.protobuf import json_format
from tickstream.v1 import feed_pb2, feed_pb2_grpc

from tests.cutting_proxy import cutting_proxy
from tests.support import ROOT, ServiceProcess, start_feed

SYMBOL = "ACME"
PUBLISH_PY = ROOT / "clients" / "python" / "publish.py"


@pytest.fixture
def feed() -> Iterator[ServiceProcess]:
    started = start_feed("--source", "none")
    yield started
    started.stop()


def draft(n: int) -> Any:
    """Tick number ``n``: a trade whose trade id is ``n`` (how the tests recognise it)."""
    return ts.trade(SYMBOL, f"{100 + n % 50}.25", "1", trade_id=str(n))


def ticks_in(events: list[ts.Event]) -> list[dict[str, Any]]:
    return [event for event in events if isinstance(event, dict)]


def trade_ids(ticks: list[dict[str, Any]]) -> list[int]:
    return [int(tick["trade"]["tradeId"]) for tick in ticks]


def assert_offsets_increase(ticks: list[dict[str, Any]]) -> None:
    offsets = [int(tick["offset"]) for tick in ticks]
    assert all(a < b for a, b in itertools.pairwise(offsets)), "offsets strictly increase"


async def stored(port: int, symbol: str = SYMBOL) -> tuple[str, list[dict[str, Any]]]:
    """The epoch and every tick the feed on ``port`` holds, read with the generated stub (not
    the client under test). With producers only, offsets 1..head all belong to the test."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = feed_pb2_grpc.FeedServiceStub(channel).Subscribe(
            feed_pb2.SubscribeRequest(symbols=[symbol], earliest=True)
        )
        ticks: list[dict[str, Any]] = []
        async with asyncio.timeout(20):
            opening = await call.read()
            head = opening.heartbeat.head_offset
            while not ticks or int(ticks[-1]["offset"]) < head:
                response = await call.read()
                ticks += [json_format.MessageToDict(t) for t in response.ticks.ticks]
        call.cancel()
    return opening.heartbeat.epoch, ticks


async def follow(stream: ts.Subscription, out: list[ts.Event]) -> None:
    """Append every event of ``stream`` to ``out`` until cancelled."""
    async with stream:
        async for event in stream:
            out.append(event)


async def wait_until(condition: Any, within: float, what: str) -> None:
    """Poll ``condition`` every 20 ms; AssertionError naming ``what`` after ``within`` s."""
    try:
        async with asyncio.timeout(within):
            while not condition():  # noqa: ASYNC110 - polls state other tasks change
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {within} s waiting for {what}") from None


@pytest.fixture
async def follower() -> AsyncIterator[list[asyncio.Task[None]]]:
    """Subscriber tasks to cancel at the end of a test."""
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_dropped_connections_deliver_every_tick_once(
    feed: ServiceProcess, follower: list[asyncio.Task[None]]
) -> None:
    """Both clients talk through a proxy that resets every connection twice mid-stream: the
    subscriber sees each published tick exactly once, in order, with no reset (the history
    covers the outage); the feed stores each tick once although batches were resent."""
    count = 3_000
    with cutting_proxy(feed.port) as proxy:
        target = f"127.0.0.1:{proxy.port}"
        acks: list[ts.Ack] = []
        events: list[ts.Event] = []
        async with asyncio.timeout(90):
            publisher = ts.Publisher(target, producer="cut", batch_size=20, on_ack=acks.append)
            await publisher.publish(draft(0))
            await publisher.flush()  # the symbol exists: subscribe from its first tick
            stream = ts.subscribe(target, [SYMBOL], after="earliest")
            follower.append(asyncio.create_task(follow(stream, events)))
            for n in range(1, count):
                await publisher.publish(draft(n))
                if n % 20 == 0:
                    await asyncio.sleep(0.01)  # about 2,000 ticks/s
                if n in (count // 3, 2 * count // 3):
                    assert proxy.cut() >= 1
            await publisher.close()
            await wait_until(lambda: len(ticks_in(events)) >= count, 30, "every tick")
        await asyncio.sleep(0.3)  # a duplicate would arrive now
    ticks = ticks_in(events)
    assert trade_ids(ticks) == list(range(count)), "each tick once, in order"
    assert_offsets_increase(ticks)
    assert not [e for e in events if isinstance(e, ts.Reset)]
    assert stream.reconnects >= 2 and publisher.stats.reconnects >= 2
    # A batch stored just before a cut whose ack was lost is resent and acknowledged as
    # duplicates: every tick is acknowledged, as stored or as a duplicate, and stored once.
    acked = sum(ack.ticks for ack in acks)
    assert publisher.stats.accepted + publisher.stats.duplicates == acked >= count
    assert publisher.stats.accepted <= count
    _, history = await stored(feed.port)
    assert trade_ids(history) == list(range(count)), "stored once each"


async def test_feed_restart_reset_then_every_tick_of_the_new_epoch(
    follower: list[asyncio.Task[None]],
) -> None:
    """The feed is SIGKILLed mid-stream and a new one started on its port. The publisher
    resends what was not acknowledged: the new epoch holds exactly the ticks after the last
    one acknowledged by the old feed, once each. The subscriber sees the old epoch's ticks
    once, one ``reset`` (epoch_changed, the new epoch), then every tick of the new epoch once."""
    count = 2_000
    old = start_feed("--source", "none")
    port, new = old.port, None
    try:
        target = f"127.0.0.1:{port}"
        acks: list[ts.Ack] = []
        events: list[ts.Event] = []
        async with asyncio.timeout(90):
            publisher = ts.Publisher(target, producer="restart", batch_size=20, on_ack=acks.append)
            await publisher.publish(draft(0))
            await publisher.flush()
            stream = ts.subscribe(target, [SYMBOL], after="earliest")
            follower.append(asyncio.create_task(follow(stream, events)))
            # Opened on the old feed first: a stream never opened ends on NOT_FOUND.
            await wait_until(lambda: bool(ticks_in(events)), 10, "the first tick")
            for n in range(1, count):
                await publisher.publish(draft(n))
                if n % 20 == 0:
                    await asyncio.sleep(0.01)
                if n == count // 3:
                    old.kill()
                    new = await asyncio.to_thread(start_feed, "--source", "none", port=port)
            await publisher.close()
            new_epoch, history = await stored(port)
            head = int(history[-1]["offset"])
            await wait_until(lambda: stream.position == (new_epoch, head), 30, "the new head")
        await asyncio.sleep(0.3)
    finally:
        old.kill()
        if new is not None:
            new.stop()
    old_epoch = acks[0].epoch
    acked_before = sum(ack.ticks for ack in acks if ack.epoch == old_epoch)
    assert 0 < acked_before < count and publisher.stats.reconnects >= 1
    assert trade_ids(history) == list(range(acked_before, count)), "resent from the last ack"
    resets = [i for i, e in enumerate(events) if isinstance(e, ts.Reset)]
    assert len(resets) == 1
    reset = events[resets[0]]
    assert isinstance(reset, ts.Reset)
    assert (reset.reason, reset.epoch, reset.offset) == ("epoch_changed", new_epoch, 0)
    before, after = ticks_in(events[: resets[0]]), ticks_in(events[resets[0] :])
    assert trade_ids(before) == list(range(len(before))), "old epoch: once each, in order"
    assert_offsets_increase(before)
    assert after == history, "new epoch: every stored tick once, in order"


async def test_new_epoch_live_goes_on_from_the_head(
    feed: ServiceProcess, follower: list[asyncio.Task[None]]
) -> None:
    """``on_new_epoch="live"``: a position of another epoch gives a Reset at the feed's head,
    then only the ticks stored after it, though the feed itself goes on from its oldest tick."""
    target = f"127.0.0.1:{feed.port}"
    events: list[ts.Event] = []
    async with asyncio.timeout(30):
        async with ts.Publisher(target) as publisher:
            for n in range(5):
                await publisher.publish(draft(n))
        epoch, history = await stored(feed.port)
        stream = ts.subscribe(target, [SYMBOL], after=("gone", 2), on_new_epoch="live")
        follower.append(asyncio.create_task(follow(stream, events)))
        await wait_until(lambda: len(events) >= 1, 10, "the reset")
        async with ts.Publisher(target) as publisher:
            for n in range(5, 8):
                await publisher.publish(draft(n))
        await wait_until(lambda: len(ticks_in(events)) == 3, 10, "the ticks after the head")
    reset = events[0]
    assert isinstance(reset, ts.Reset)
    head = int(history[-1]["offset"])
    assert (reset.reason, reset.epoch, reset.offset) == ("epoch_changed", epoch, head)
    assert trade_ids(ticks_in(events)) == [5, 6, 7]


async def test_symbol_unknown_to_a_restarted_feed_is_waited_for(
    follower: list[asyncio.Task[None]],
) -> None:
    """After a restart, a producers-only feed does not know the symbol until a producer
    publishes it again: the subscriber retries NOT_FOUND (it is not an unknown symbol it asked
    for by mistake) and, once ticks come, yields a reset and the new epoch's ticks."""
    old = start_feed("--source", "none")
    port, new = old.port, None
    target = f"127.0.0.1:{port}"
    events: list[ts.Event] = []
    try:
        async with asyncio.timeout(60):
            async with ts.Publisher(target) as publisher:
                for n in range(10):
                    await publisher.publish(draft(n))
            stream = ts.subscribe(target, [SYMBOL], after="earliest")
            follower.append(asyncio.create_task(follow(stream, events)))
            await wait_until(lambda: len(ticks_in(events)) == 10, 10, "the first ticks")
            old.kill()
            new = await asyncio.to_thread(start_feed, "--source", "none", port=port)
            tried = stream.reconnects
            await wait_until(lambda: stream.reconnects >= tried + 2, 15, "NOT_FOUND retries")
            async with ts.Publisher(target) as publisher:
                for n in range(10, 20):
                    await publisher.publish(draft(n))
            await wait_until(lambda: len(ticks_in(events)) == 20, 15, "the new ticks")
    finally:
        old.kill()
        if new is not None:
            new.stop()
    assert [type(e).__name__ for e in events].count("Reset") == 1
    assert isinstance(events[10], ts.Reset) and events[10].reason == "epoch_changed"
    assert trade_ids(ticks_in(events)) == list(range(20))


async def test_stalled_feed_is_noticed_and_resumed_without_gap(
    feed: ServiceProcess, follower: list[asyncio.Task[None]]
) -> None:
    """A SIGSTOPped feed sends nothing, not even heartbeats: the subscriber gives up on the
    silent stream after ``heartbeat_timeout`` and retries; once the feed runs again it resumes
    after its position with no gap, no duplicate and no reset."""
    target = f"127.0.0.1:{feed.port}"
    events: list[ts.Event] = []
    async with asyncio.timeout(60), ts.Publisher(target, batch_size=10) as publisher:
        for n in range(100):
            await publisher.publish(draft(n))
        await publisher.flush()
        stream = ts.subscribe(target, [SYMBOL], after="earliest", heartbeat_timeout=1.0)
        follower.append(asyncio.create_task(follow(stream, events)))
        await wait_until(lambda: len(ticks_in(events)) == 100, 10, "the first ticks")
        feed.signal(signal.SIGSTOP)
        try:
            await wait_until(lambda: stream.reconnects >= 1, 10, "the stall noticed")
        finally:
            feed.signal(signal.SIGCONT)
        for n in range(100, 200):
            await publisher.publish(draft(n))
        await publisher.flush()
        await wait_until(lambda: len(ticks_in(events)) >= 200, 20, "the later ticks")
        await asyncio.sleep(0.3)
    assert trade_ids(ticks_in(events)) == list(range(200))
    assert not [e for e in events if isinstance(e, ts.Reset)]


async def test_publisher_outlives_a_feed_stalled_past_its_ack_timeout(
    feed: ServiceProcess,
) -> None:
    """Regression: a feed SIGSTOPped for longer than ``ack_timeout`` made the publisher cancel
    its call, and grpc-aio's CancelledError from the pending read ended the publisher's task
    for good: publish() and close() then waited forever. Now it reconnects and resends."""
    async with (
        asyncio.timeout(60),
        ts.Publisher(f"127.0.0.1:{feed.port}", batch_size=10, ack_timeout=1.0) as publisher,
    ):
        for n in range(50):
            await publisher.publish(draft(n))
        await publisher.flush()
        feed.signal(signal.SIGSTOP)
        try:
            for n in range(50, 100):
                await publisher.publish(draft(n))
            await asyncio.sleep(2.5)
        finally:
            feed.signal(signal.SIGCONT)
        await publisher.flush()
    assert publisher.stats.reconnects >= 1
    _, ticks = await stored(feed.port)
    assert trade_ids(ticks) == list(range(100)), "each tick stored once, in order"


async def test_terminal_errors_raise() -> None:
    """An unknown symbol ends a subscription with SubscribeError (NOT_FOUND); a batch the feed
    refuses (over its --max-batch) ends publishing with PublishError naming the batch."""
    feed = start_feed("--source", "none", "--max-batch", "10")
    try:
        target = f"127.0.0.1:{feed.port}"
        async with asyncio.timeout(30):
            with pytest.raises(ts.SubscribeError, match=r"NOT_FOUND.*NOPE") as refused:
                async with ts.subscribe(target, ["NOPE"]) as stream:
                    async for _ in stream:
                        pass
            assert refused.value.code == grpc.StatusCode.NOT_FOUND
            publisher = ts.Publisher(target, batch_size=20)  # over the feed's limit of 10
            for n in range(5):
                await publisher.publish(draft(n))
            await publisher.flush()  # a partial batch of 5: stored
            for n in range(5, 25):
                await publisher.publish(draft(n))
            with pytest.raises(ts.PublishError, match="batch 2 refused: INVALID_ARGUMENT") as bad:
                await publisher.close()
            assert (bad.value.batch_id, bad.value.dropped_ticks) == (2, 20)
            with pytest.raises(ts.PublishError):
                await publisher.publish(draft(99))
    finally:
        feed.stop()


def write_input(path: Path, count: int) -> None:
    """``count`` ticks, trades and quotes alternating; tick ``n`` carries ``n`` as its trade
    id (trades) or bid size (quotes). JSON lines carry an ``id``; the CSV file has none, so
    publish.py derives dedup ids from the file name and line."""
    rows = []
    for n in range(count):
        if n % 2 == 0:
            rows.append({"symbol": SYMBOL, "type": "trade", "price": "10.5", "size": "2",
                         "side": "buy", "trade_id": str(n)})  # fmt: skip
        else:
            rows.append({"symbol": SYMBOL, "type": "quote", "bid_price": "10.4",
                         "bid_size": str(n), "ask_price": "10.6", "ask_size": "1"})  # fmt: skip
    if path.suffix == ".csv":
        fields = ["symbol", "type", "price", "size", "side", "trade_id"]
        fields += ["bid_price", "bid_size", "ask_price", "ask_size", "event_time"]
        with path.open("w", newline="") as out:
            writer = csv.DictWriter(out, fields)
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text(
            "".join(json.dumps({**row, "id": f"t{n}"}) + "\n" for n, row in enumerate(rows))
        )


def tick_number(tick: dict[str, Any]) -> int:
    return int(tick["trade"]["tradeId"] if "trade" in tick else tick["quote"]["bidSize"])


async def run_publish(
    path: Path, port: int, *extra: str, until_stored: int | None = None
) -> tuple[int | None, list[str]]:
    """Run publish.py; with ``until_stored``, SIGKILL it once its acks report that many ticks
    stored. Returns its exit code (None when killed) and its output lines."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(PUBLISH_PY), str(path), "--target", f"127.0.0.1:{port}", *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    stored_ticks = 0
    try:
        async with asyncio.timeout(60):
            while line := (await process.stdout.readline()).decode():
                lines.append(line.rstrip())
                if match := re.match(r"ack batch \d+: (\d+) stored", line):
                    stored_ticks += int(match[1])
                if until_stored is not None and stored_ticks >= until_stored:
                    process.send_signal(signal.SIGKILL)
                    await process.wait()
                    return None, lines
            return await process.wait(), lines
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize("name", ["ticks.csv", "ticks.jsonl"])
async def test_publish_py_killed_and_rerun_stores_every_tick_once(
    feed: ServiceProcess, follower: list[asyncio.Task[None]], tmp_path: Path, name: str
) -> None:
    """clients/python/publish.py is SIGKILLed mid-stream, then run again on the same input: it
    resends from the start, the feed recognises what it already stored, and a subscriber
    sees every tick of the file exactly once."""
    count = 1_500
    path = tmp_path / name
    write_input(path, count)
    events: list[ts.Event] = []
    stream = ts.subscribe(f"127.0.0.1:{feed.port}", [SYMBOL], after="earliest")
    code, first = await run_publish(path, feed.port, "--rate", "500", until_stored=300)
    assert code is None, "killed mid-stream:\n" + "\n".join(first)
    follower.append(asyncio.create_task(follow(stream, events)))
    code, second = await run_publish(path, feed.port)
    assert code == 0, "\n".join(second)
    done = re.fullmatch(r"done: (\d+) ticks, (\d+) stored, (\d+) duplicates", second[-1])
    assert done, second[-1]
    ticks_read, stored_now, duplicates = map(int, done.groups())
    assert ticks_read == count and duplicates >= 300 and stored_now + duplicates == count
    _, history = await stored(feed.port)
    assert [tick_number(t) for t in history] == list(range(count)), "stored once each, in order"
    head = int(history[-1]["offset"])
    await wait_until(lambda: stream.position is not None and stream.position[1] == head, 20, "head")
    await asyncio.sleep(0.3)
    ticks = ticks_in(events)
    assert [tick_number(t) for t in ticks] == [tick_number(t) for t in history]
    assert len(ticks) == count


async def test_publish_py_reads_the_shapes_publish_js_reads(
    feed: ServiceProcess, tmp_path: Path
) -> None:
    """Regression (newcomer run): publish.py failed on a CSV without a ``type`` column and on
    JSON lines in the SSE shape, which the Node example takes; a refused tick printed a
    traceback. Now both shapes are read, and a refusal is one line and exit 1."""
    flat = tmp_path / "flat.csv"
    flat.write_text(
        "symbol,price,size,bid_price,bid_size,ask_price,ask_size\n"
        "SHAPE,10.50,3,,,,\nSHAPE,,,10.40,1,10.60,2\n"
    )
    shaped = tmp_path / "shaped.jsonl"
    shaped.write_text(
        '{"symbol": "SHAPE", "eventTime": "2024-08-08T23:54:20.816Z", "id": "s1",'
        ' "trade": {"price": "12.50", "size": "100", "side": "SIDE_BUY"}}\n'
    )
    for path in (flat, shaped):
        code, lines = await run_publish(path, feed.port)
        assert code == 0, lines
    _, ticks = await stored(feed.port, "SHAPE")
    assert [t.get("trade") or t.get("quote") for t in ticks] == [
        {"price": "10.50", "size": "3"},
        {"bidPrice": "10.40", "bidSize": "1", "askPrice": "10.60", "askSize": "2"},
        {"price": "12.50", "size": "100", "side": "SIDE_BUY"},
    ]
    assert ticks[2]["eventTime"] == "2024-08-08T23:54:20.816Z"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"symbol": "SHAPE", "type": "trade", "price": "1e5", "size": "1"}\n')
    code, lines = await run_publish(bad, feed.port)
    assert code == 1 and lines == [
        "publish.py: ValueError: trade.price: '1e5' is not a decimal string"
    ]
