"""The Node.js client library (clients/node/tickstream.js) and its producer example (publish.js)
against real feeds and edges: value-exact publishing to SSE clients, a producer killed and rerun,
dropped connections and a feed restart under both the publisher and the subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from tickstream.v1 import feed_pb2, feed_pb2_grpc, tick_pb2

from tests.conftest import Stack
from tests.cutting_proxy import cutting_proxy
from tests.support import ROOT, collect, start_edge, start_feed

NODE_DIR = ROOT / "clients" / "node"
pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_DIR / "node_modules").is_dir(),
    reason="needs node and `make node-deps` (npm ci in clients/node)",
)
BASE_NS = 1_723_075_200_000_000_000  # 2024-08-08T00:00:00Z
ACK = re.compile(r"^ack batch (\d+): (\d+) stored, (\d+) duplicates, last offset (\d+)$")
DONE = re.compile(
    r"^done: (\d+) ticks, (\d+) stored, (\d+) duplicates, (\d+) batches, (\d+) reconnects"
    r" in [\d.]+ s$"
)


# ----- input files and what the feed must make of them ----------------------------------------


def rfc3339(ns: int) -> str:
    """protobuf's JSON form of a Timestamp: 0, 3, 6 or 9 fractional digits."""
    stamp = tick_pb2.Tick()
    stamp.event_time.FromNanoseconds(ns)
    return stamp.event_time.ToJsonString()


def tick_row(i: int, symbol: str) -> dict[str, Any]:
    """Row ``i`` (from 1) as the proto3 JSON the edge must send for it, without its numbering.

    Two in five rows are quotes. Prices and sizes vary in digits (trailing zeros kept), event
    times in precision (s, ms, us, ns), trades in side and trade id. A row is recognisable from
    its size (trades) or bid size (quotes): the integer part is ``i``.
    """
    ns = BASE_NS + i * 1_000_000_000 + (0, 816_000_000, 123_456_000, 7)[i % 4] + (i % 4 == 3) * i
    row: dict[str, Any] = {"symbol": symbol, "eventTime": rfc3339(ns)}
    cents = 18_900 + (i * 13) % 500
    if i % 5 in (0, 3):
        ask = cents + 1 + i % 3
        row["quote"] = {
            "bidPrice": f"{cents // 100}.{cents % 100:02d}",
            "bidSize": f"{i}.{i % 10}0",
            "askPrice": f"{ask // 100}.{ask % 100:02d}00",
            "askSize": str(i % 7 + 1),
        }
    else:
        trade = {"price": f"{cents // 100}.{cents % 100:02d}{i % 10}", "size": str(i)}
        if i % 7:
            trade["tradeId"] = str(900_000 + i)
        if side := ("", "SIDE_BUY", "SIDE_SELL")[i % 3]:
            trade["side"] = side
        row["trade"] = trade
    return row


def row_of(tick: dict[str, Any]) -> int:
    body = tick.get("trade") or tick["quote"]
    return int((body.get("size") or body["bidSize"]).split(".")[0])


def write_csv(path: Path, symbol: str, count: int) -> None:
    """``count`` rows in publish.js's CSV format, without an id column (dedup ids: FILE:LINE)."""
    lines = ["symbol,event_time,price,size,trade_id,side,bid_price,bid_size,ask_price,ask_size"]
    for i in range(1, count + 1):
        row = tick_row(i, symbol)
        t, q = row.get("trade", {}), row.get("quote", {})
        side = {"SIDE_BUY": "buy", "SIDE_SELL": "sell"}.get(t.get("side", ""), "")
        cells = [symbol, row["eventTime"], t.get("price", ""), t.get("size", "")]
        cells += [t.get("tradeId", ""), side, q.get("bidPrice", ""), q.get("bidSize", "")]
        cells += [q.get("askPrice", ""), q.get("askSize", "")]
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")


def write_jsonl(path: Path, symbol: str, count: int) -> None:
    """``count`` ticks as JSON lines in the SSE shape, each with an ``id``."""
    rows = [{**tick_row(i, symbol), "id": f"row-{i}"} for i in range(1, count + 1)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def numbering_removed(tick: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in tick.items() if k not in ("sequence", "offset", "ingestTime")}


def assert_contiguous_sequences(ticks: list[dict[str, Any]]) -> None:
    """Per tick type, ``sequence`` runs 1, 2, 3... without a hole."""
    for kind in ("trade", "quote"):
        sequences = [int(t["sequence"]) for t in ticks if kind in t]
        assert sequences == list(range(1, len(sequences) + 1)), kind


# ----- processes --------------------------------------------------------------------------------


@dataclass
class NodeRun:
    """A node script under clients/node/, its stdout collected line by line."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, *args: str) -> NodeRun:
        process = await asyncio.create_subprocess_exec(
            "node",
            *args,
            cwd=NODE_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        run = cls(process)
        run.reader = asyncio.create_task(run._read())
        return run

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            if line.endswith(b"\n"):  # a killed script may leave half a line
                self.lines.append(line.decode().rstrip("\n"))

    async def wait_until(self, done: Callable[[list[str]], bool], within: float) -> None:
        """Poll the output until ``done(lines)``; fails with the output after ``within`` s."""
        try:
            async with asyncio.timeout(within):
                while not done(self.lines):
                    if self.process.returncode is not None and self.reader and self.reader.done():
                        raise AssertionError("node exited")
                    await asyncio.sleep(0.05)
        except (TimeoutError, AssertionError) as error:
            raise AssertionError(f"{error!r}; output:\n" + "\n".join(self.lines[-30:])) from None

    async def finish(self, within: float) -> int:
        """Wait for the script to exit by itself; its exit code."""
        async with asyncio.timeout(within):
            code = await self.process.wait()
            assert self.reader is not None
            await self.reader
        return code

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        async with asyncio.timeout(10):
            await self.process.wait()
            if self.reader is not None:
                await self.reader

    def acks(self) -> list[tuple[int, ...]]:
        """publish.js's acknowledgements: (batch id, stored, duplicates, last offset)."""
        return [tuple(int(g) for g in m.groups()) for line in self.lines if (m := ACK.match(line))]

    def events(self) -> list[dict[str, Any]]:
        """follow.js output: one JSON event a line."""
        return [json.loads(line) for line in self.lines if line.startswith("{")]

    def ticks(self) -> list[dict[str, Any]]:
        return [e["tick"] for e in self.events() if e["type"] == "tick"]


@contextlib.asynccontextmanager
async def node(*args: str) -> AsyncIterator[NodeRun]:
    run = await NodeRun.start(*args)
    try:
        yield run
    finally:
        await run.kill()


@contextlib.contextmanager
def producer_feed(*extra: str, edge: bool = False) -> Iterator[Stack]:
    """A feed with no built-in source (only producers feed it), and an edge if asked."""
    feed = start_feed("--source", "none", *extra)
    stack = Stack(feed, feed)
    try:
        if edge:
            stack.edge = start_edge(feed.port)
        yield stack
    finally:
        if stack.edge is not stack.feed:
            stack.edge.stop()
        stack.feed.stop()


async def stored_ticks(port: int, symbol: str) -> tuple[str, list[tick_pb2.Tick]]:
    """The feed's epoch and its whole retained history of ``symbol`` (read over gRPC)."""
    ticks: list[tick_pb2.Tick] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = feed_pb2_grpc.FeedServiceStub(channel)
        request = feed_pb2.SubscribeRequest(symbols=[symbol], earliest=True)
        call = stub.Subscribe(request)
        async with asyncio.timeout(30):
            first = await call.read()
            assert isinstance(first, feed_pb2.SubscribeResponse)
            epoch, head = first.heartbeat.epoch, first.heartbeat.head_offset
            complete = 0
            while complete < head:
                response = await call.read()
                assert isinstance(response, feed_pb2.SubscribeResponse)
                if response.HasField("ticks"):
                    ticks.extend(response.ticks.ticks)
                    complete = response.ticks.head_offset
                elif response.HasField("heartbeat"):
                    complete = response.heartbeat.head_offset
        call.cancel()
    return epoch, ticks


def rows_stored(ticks: list[tick_pb2.Tick]) -> list[int]:
    return [row_of(json_format.MessageToDict(t)) for t in ticks]


async def assert_listed(http: httpx.AsyncClient, base_url: str, symbol: str) -> dict[str, Any]:
    """The edge's `/symbols` entry of ``symbol`` (the edge asks the feed again for a symbol it
    does not know yet, so a just-published one is listed at once)."""
    listed = (await http.get(f"{base_url}/symbols")).json()["symbols"]
    found = [info for info in listed if info["symbol"] == symbol]
    assert found, f"{symbol} is not listed by /symbols: {[i['symbol'] for i in listed]}"
    return found[0]


# ----- tests ------------------------------------------------------------------------------------


async def test_node_producer_publishes_10000_ticks_value_exact_to_sse(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    """Acceptance: a Node producer publishes 10,000 trades and quotes for a new symbol; an SSE
    client receives all of them in order, value-exact, sequences contiguous from 1; `/symbols`
    lists the symbol; the Node subscriber's ticks are the SSE JSON, byte for byte."""
    symbol, count = "NODE.PUB", 10_000
    source = tmp_path / "ticks.csv"
    write_csv(source, symbol, count)
    with producer_feed(edge=True) as stack:
        async with node("publish.js", stack.feed_target, str(source), "--producer", "t1") as pub:
            assert await pub.finish(within=60) == 0, "\n".join(pub.lines[-20:])
        done = DONE.match(pub.lines[-1])
        assert done is not None, pub.lines[-5:]
        ticks, stored, duplicates, batches, reconnects = map(int, done.groups())
        assert (ticks, stored, duplicates, reconnects) == (count, count, 0, 0)
        assert sum(ack[1] for ack in pub.acks()) == count and len(pub.acks()) == batches

        info = await assert_listed(http, stack.base_url, symbol)
        assert info["source"] == "publish:t1"
        url = f"{stack.base_url}/sse/{symbol}?last_event_id=earliest"
        events = await collect(http, url, count, within=60)
        assert [e.event for e in events] == [
            "trade" if i % 5 not in (0, 3) else "quote" for i in range(1, count + 1)
        ]
        sse_ticks = [json.loads(e.data) for e in events]
        assert [numbering_removed(t) for t in sse_ticks] == [
            tick_row(i, symbol) for i in range(1, count + 1)
        ]
        offsets = [int(t["offset"]) for t in sse_ticks]
        assert offsets == list(range(1, count + 1))  # the feed holds this producer's ticks only
        assert_contiguous_sequences(sse_ticks)

        async with node("test/follow.js", stack.feed_target, symbol, "earliest") as follow:
            await follow.wait_until(lambda lines: len(lines) >= count, within=60)
        node_ticks = follow.ticks()[:count]
        assert [json.dumps(t, separators=(",", ":")) for t in node_ticks] == [
            e.data for e in events
        ]


async def test_node_producer_reads_json_lines_with_ids(tmp_path: Path) -> None:
    """publish.js takes JSON lines in the SSE shape; their `id` is the dedup id, so a rerun
    with the lines reordered still stores nothing twice."""
    symbol, count = "NODE.JSONL", 500
    source = tmp_path / "ticks.jsonl"
    write_jsonl(source, symbol, count)
    with producer_feed() as stack:
        async with node("publish.js", stack.feed_target, str(source)) as pub:
            assert await pub.finish(within=30) == 0, "\n".join(pub.lines[-20:])
        assert pub.lines[-1].startswith(f"done: {count} ticks, {count} stored, 0 duplicates, ")
        lines = source.read_text().splitlines()
        source.write_text("\n".join(reversed(lines)) + "\n")
        async with node("publish.js", stack.feed_target, str(source)) as again:
            assert await again.finish(within=30) == 0
        assert again.lines[-1].startswith(f"done: {count} ticks, 0 stored, {count} duplicates, ")
        _, ticks = await stored_ticks(stack.feed.port, symbol)
        assert rows_stored(ticks) == list(range(1, count + 1))
        assert [numbering_removed(json_format.MessageToDict(t)) for t in ticks] == [
            tick_row(i, symbol) for i in range(1, count + 1)
        ]


async def test_node_producer_killed_and_rerun_stores_every_tick_once(
    tmp_path: Path, http: httpx.AsyncClient
) -> None:
    """Acceptance: a producer SIGKILLed mid-stream and started again with the same input resends
    from the start; the feed drops what it already has (dedup ids FILE:LINE), and subscribers
    (a Node one following throughout, an SSE one after) see every tick exactly once."""
    symbol, count = "NODE.KILL", 4_000
    source = tmp_path / "ticks.csv"
    write_csv(source, symbol, count)
    with producer_feed(edge=True) as stack:
        target = stack.feed_target
        async with node("publish.js", target, str(source), "--rate", "1000") as first:
            await first.wait_until(lambda lines: any(ACK.match(line) for line in lines), within=20)
            async with node("test/follow.js", target, symbol, "earliest") as follow:
                await first.wait_until(lambda _: first.acks()[-1][3] >= 500, within=20)
                await first.kill()
                acked = first.acks()[-1][3]  # the last offset acknowledged: rows 1..acked stored
                assert acked < count, "the producer should have been killed mid-stream"
                async with node("publish.js", target, str(source)) as second:
                    assert await second.finish(within=60) == 0, "\n".join(second.lines[-20:])
                done = DONE.match(second.lines[-1])
                assert done is not None
                ticks, stored, duplicates = map(int, done.groups()[:3])
                assert ticks == count and stored + duplicates == count
                assert duplicates >= acked
                await follow.wait_until(lambda lines: len(lines) >= count, within=30)
                await asyncio.sleep(0.5)  # anything extra would show up now
            assert [row_of(t) for t in follow.ticks()] == list(range(1, count + 1))
            assert all(e["type"] == "tick" for e in follow.events())

        epoch, stored_list = await stored_ticks(stack.feed.port, symbol)
        assert rows_stored(stored_list) == list(range(1, count + 1)), "nothing stored twice"
        await assert_listed(http, stack.base_url, symbol)
        events = await collect(http, f"{stack.base_url}/sse/{symbol}?last_event_id=earliest", count)
        sse_ticks = [json.loads(e.data) for e in events]
        assert [row_of(t) for t in sse_ticks] == list(range(1, count + 1))
        assert_contiguous_sequences(sse_ticks)
        assert {e.id.rsplit("-", 1)[0] for e in events if e.id} == {epoch}


async def test_node_clients_survive_dropped_connections(tmp_path: Path) -> None:
    """Acceptance: connections cut under a Node publisher and a Node subscriber (a proxy resets
    them, as a broken path does); the publisher resends what was unacknowledged and the feed
    stores every tick once; the subscriber resumes and sees every tick once, without a reset."""
    symbol, count = "NODE.CUT", 6_000
    source = tmp_path / "ticks.csv"
    write_csv(source, symbol, count)
    with producer_feed() as stack, cutting_proxy(stack.feed.port) as proxy:
        target = f"127.0.0.1:{proxy.port}"
        async with node("publish.js", target, str(source), "--rate", "1500") as pub:
            await pub.wait_until(lambda lines: any(ACK.match(line) for line in lines), within=20)
            async with node("test/follow.js", target, symbol, "earliest") as follow:
                for cut in range(1, 4):
                    # Both streams are flowing again since the last cut (new acks, new ticks).
                    acks, seen = len(pub.acks()), len(follow.ticks())
                    await pub.wait_until(lambda _, n=acks: len(pub.acks()) >= n + 20, within=20)
                    await follow.wait_until(lambda _, n=seen: len(follow.ticks()) > n, within=20)
                    await asyncio.sleep(0.3)
                    assert proxy.cut() >= 2, f"cut {cut}: the two streams were not both carried"
                assert await pub.finish(within=60) == 0, "\n".join(pub.lines[-20:])
                await follow.wait_until(lambda lines: len(follow.ticks()) >= count, within=30)
                await asyncio.sleep(0.5)
            done = DONE.match(pub.lines[-1])
            assert done is not None
            ticks, stored, duplicates, _, reconnects = map(int, done.groups())
            assert ticks == count and stored + duplicates == count
            assert reconnects >= 3, pub.lines
            assert sum(line.startswith("connection lost") for line in pub.lines) == reconnects

        events = follow.events()
        assert sum(e["type"] == "retry" for e in events) >= 3
        assert not [e for e in events if e["type"] == "reset"]
        assert [row_of(t) for t in follow.ticks()] == list(range(1, count + 1))
        _, stored_list = await stored_ticks(stack.feed.port, symbol)
        assert rows_stored(stored_list) == list(range(1, count + 1)), "nothing stored twice"


async def test_node_clients_survive_feed_restart(tmp_path: Path) -> None:
    """Acceptance: the feed is SIGKILLed and a new one (new epoch, empty history) starts on the
    same port. The publisher resends exactly the batches the old feed had not acknowledged; the
    subscriber sees each tick of the old epoch once, one `reset` (epoch_changed), then every
    tick of the new epoch once, from its first to the end."""
    symbol, count = "NODE.RESTART", 9_000
    source = tmp_path / "ticks.csv"
    write_csv(source, symbol, count)
    with producer_feed() as stack:
        port = stack.feed.port
        async with node("publish.js", stack.feed_target, str(source), "--rate", "1000") as pub:
            await pub.wait_until(lambda lines: any(ACK.match(line) for line in lines), within=20)
            async with node("test/follow.js", stack.feed_target, symbol, "earliest") as follow:
                # The subscriber must have opened its stream on the old feed: one that first
                # reaches the new feed before the publisher has resent anything is told
                # NOT_FOUND (the symbol is not there yet), which ends a stream never opened.
                await follow.wait_until(lambda _: bool(follow.ticks()), within=20)
                await pub.wait_until(lambda _: pub.acks()[-1][3] >= 1_500, within=20)
                assert pub.acks()[-1][3] < count, "the publisher finished before the restart"
                stack.feed.kill()
                stack.feed = restarted = start_feed("--source", "none", port=port)
                assert await pub.finish(within=60) == 0, "\n".join(pub.lines[-20:])
                await follow.wait_until(
                    lambda _: any(row_of(t) == count for t in follow.ticks()),
                    within=30,
                )
                await asyncio.sleep(0.5)

        # The publisher: everything acknowledged by the old feed is not sent again; everything
        # else is stored by the new feed, once.
        lost = next(i for i, line in enumerate(pub.lines) if line.startswith("connection lost"))
        acked_before = [int(m[4]) for line in pub.lines[:lost] if (m := ACK.match(line))][-1]
        new_epoch, stored_list = await stored_ticks(restarted.port, symbol)
        assert rows_stored(stored_list) == list(range(acked_before + 1, count + 1))

        # The subscriber: old-epoch ticks once each from row 1, a reset, then the new epoch
        # replayed from its start: each tick the new feed holds, once.
        events = [e for e in follow.events() if e["type"] in ("tick", "reset")]
        resets = [i for i, e in enumerate(events) if e["type"] == "reset"]
        assert len(resets) == 1, [e for e in events if e["type"] == "reset"]
        reset = events[resets[0]]
        assert (reset["reason"], reset["epoch"], reset["offset"]) == (
            "epoch_changed",
            new_epoch,
            "0",
        )
        before = [row_of(e["tick"]) for e in events[: resets[0]]]
        after = [e["tick"] for e in events[resets[0] + 1 :]]
        assert before, "the subscriber had ticks of the old epoch"
        assert before == list(range(1, len(before) + 1))
        assert [row_of(t) for t in after] == list(range(acked_before + 1, count + 1))
        assert [int(t["offset"]) for t in after] == list(range(1, count - acked_before + 1))
        retries = [e for e in follow.events() if e["type"] == "retry"]
        assert retries, "the subscriber noticed the feed going away"


async def test_node_subscriber_ticks_equal_the_sse_json_of_real_data(
    replay_stack: Stack, http: httpx.AsyncClient
) -> None:
    """The library's proto3 JSON of recorded Binance ticks (8-digit decimals; trade times in ms,
    quote times in ns) is the edge's SSE `data`, byte for byte."""
    count = 3_000
    url = f"{replay_stack.base_url}/sse?symbols=BTCUSDT,ETHUSDT&last_event_id=earliest"
    events = await collect(http, url, count, within=60)
    target = replay_stack.feed_target
    async with node("test/follow.js", target, "BTCUSDT,ETHUSDT", "earliest") as follow:
        await follow.wait_until(lambda _: len(follow.ticks()) >= count, within=60)
    node_ticks = follow.ticks()[:count]
    assert [json.dumps(t, separators=(",", ":")) for t in node_ticks] == [e.data for e in events]
    assert {len(t["eventTime"]) for t in node_ticks} >= {24, 30}  # ms and ns precision both seen


async def test_node_subscriber_reopens_a_silent_stream(tmp_path: Path) -> None:
    """A feed that stops answering (SIGSTOP) is noticed after 5 s without a message (it
    heartbeats every second); once it answers again the subscriber resumes without a gap, a
    duplicate or a reset."""
    symbol = "NODE.QUIET"
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    rows = [json.dumps({**tick_row(i, symbol), "id": f"q{i}"}) for i in range(1, 41)]
    first.write_text("\n".join(rows[:20]) + "\n")
    second.write_text("\n".join(rows[20:]) + "\n")
    with producer_feed() as stack:
        async with node("publish.js", stack.feed_target, str(first)) as pub:
            assert await pub.finish(within=30) == 0
        async with node("test/follow.js", stack.feed_target, symbol, "earliest") as follow:
            await follow.wait_until(lambda _: len(follow.ticks()) >= 20, within=20)
            stack.feed.signal(signal.SIGSTOP)
            try:
                await follow.wait_until(lambda lines: any('"retry"' in x for x in lines), within=15)
            finally:
                stack.feed.signal(signal.SIGCONT)
            async with node("publish.js", stack.feed_target, str(second)) as pub:
                assert await pub.finish(within=30) == 0
            await follow.wait_until(lambda _: len(follow.ticks()) >= 40, within=20)
            await asyncio.sleep(0.3)
        retry = next(e for e in follow.events() if e["type"] == "retry")
        assert retry["message"] == "no message from the feed for 5000 ms"
        assert [row_of(t) for t in follow.ticks()] == list(range(1, 41))
        assert not [e for e in follow.events() if e["type"] == "reset"]


def test_node_library_unit_and_live_tests() -> None:
    """clients/node/test/*.test.js (node:test): JSON and draft rules without a server, then the
    library against a feed of its own (NOT_FOUND, acknowledgement order and window, dedup,
    INVALID_ARGUMENT, snapshot, resume and reset)."""
    with producer_feed() as stack:
        result = subprocess.run(
            ["node", "--test", "test/ticks.test.js", "test/live.test.js"],
            cwd=NODE_DIR,
            env={**os.environ, "TICKSTREAM_TARGET": stack.feed_target},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"^# pass 13$", result.stdout, re.MULTILINE), result.stdout[-2000:]
