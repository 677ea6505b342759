"""``--source binance`` against a local WebSocket server serving the recorded data in Binance's
combined-stream framing, and depth snapshots over REST (``tests/exchange_server.py``). The real
exchange is never reached here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

import grpc
import pytest
from tickstream.v1 import feed_pb2, feed_pb2_grpc, tick_pb2

from feed_service.liveness import CONNECTED, STALE, SourceHandle
from feed_service.sources.binance import Backoff, BinanceSource
from tests.exchange_server import (
    ExchangeServer,
    StreamMessage,
    recorded_messages,
    recorded_snapshots,
)
from tests.support import BTC_FILE, ETH_FILE, services, start_feed
from tickstream_common.book import OrderBook

SYMBOLS = ("BTCUSDT", "ETHUSDT")
STREAMS = {f"{s.lower()}@{kind}" for s in SYMBOLS for kind in ("trade", "bookTicker")}
DEPTH_STREAMS = {f"{s.lower()}@depth@100ms" for s in SYMBOLS}
SLICE = 20_000  # recorded lines (depth included) served: 18,145 trades and quotes
DROP_EVERY = 6_000
REWIND = 50

Key = tuple[str, str, str]  # (symbol, "trade" | "quote", trade id | update id)


def served_slice() -> tuple[list[StreamMessage], list[StreamMessage]]:
    messages = recorded_messages([BTC_FILE, ETH_FILE], SLICE)
    return messages, [m for m in messages if m.stream in STREAMS]


def expected_values(served: list[StreamMessage]) -> dict[Key, tuple[object, ...]]:
    """Each served trade and quote by key, with the values the feed must carry unchanged."""
    out: dict[Key, tuple[object, ...]] = {}
    for message in served:
        data = json.loads(message.text)["data"]
        if message.stream.endswith("@trade"):
            side = tick_pb2.SIDE_SELL if data["m"] else tick_pb2.SIDE_BUY
            value = (data["p"], data["q"], side, data["T"] * 1_000_000)
            out[(data["s"], "trade", str(data["t"]))] = value
        else:
            out[(data["s"], "quote", str(data["u"]))] = (data["b"], data["B"], data["a"], data["A"])
    return out


def received_values(tick: tick_pb2.Tick) -> tuple[Key, tuple[object, ...]]:
    if tick.HasField("trade"):
        t = tick.trade
        value = (t.price, t.size, t.side, tick.event_time.ToNanoseconds())
        return (tick.symbol, "trade", t.trade_id), value
    q = tick.quote
    # a spot quote carries no id on the wire; the test matches it by its position instead
    return (tick.symbol, "quote", ""), (q.bid_price, q.bid_size, q.ask_price, q.ask_size)


async def read_history(target: str, count: int) -> tuple[list[tick_pb2.Tick], int]:
    """Every trade, quote and book tick from the earliest, at least ``count`` of them, then
    the head offset of the first heartbeat after them (a quiet second: nothing more arrived)."""
    ticks: list[tick_pb2.Tick] = []
    types = [tick_pb2.TICK_TYPE_TRADE, tick_pb2.TICK_TYPE_QUOTE, tick_pb2.TICK_TYPE_BOOK]
    request = feed_pb2.SubscribeRequest(symbols=list(SYMBOLS), earliest=True, types=types)
    async with grpc.aio.insecure_channel(target) as channel, asyncio.timeout(30):
        call = feed_pb2_grpc.FeedServiceStub(channel).Subscribe(request)
        async for response in call:
            event = response.WhichOneof("event")
            if event == "ticks":
                ticks.extend(response.ticks.ticks)
            elif event == "heartbeat" and len(ticks) >= count:
                call.cancel()
                return ticks, response.heartbeat.head_offset
    raise AssertionError(f"stream ended after {len(ticks)} of {count} ticks")


def check_books(
    updates: list[tuple[str, tick_pb2.BookUpdate]],
    exchange: ExchangeServer,
    symbols: Iterable[str] | None = None,
) -> None:
    """Each symbol's book updates start with a snapshot, chain update ids without a gap after
    each snapshot, and end as the exchange's book (its top 100 levels a side); books of
    ``symbols`` (default: every book the exchange has) and no other."""
    books: dict[str, OrderBook] = {}
    for symbol, update in updates:
        book = books.setdefault(symbol, OrderBook())
        if not update.snapshot:
            assert book.valid, f"{symbol}: a diff before the first snapshot"
            assert update.first_update_id <= book.last_update_id + 1 <= update.last_update_id
        book.apply(update)
    assert set(books) == set(exchange.books if symbols is None else symbols)
    for symbol, book in books.items():
        want = exchange.books[symbol].top(100)
        bids, asks = book.top(100)
        assert book.last_update_id == want["lastUpdateId"], symbol
        assert (bids, asks) == (want["bids"], want["asks"]), symbol


def check_exactly_once(ticks: list[tick_pb2.Tick], served: list[StreamMessage]) -> None:
    """Every served trade and quote once, values exact, in order; sequences contiguous."""
    expected = expected_values(served)
    expected_keys = list(expected)
    by_stream: dict[tuple[str, str], list[Key]] = defaultdict(list)
    for key in expected_keys:
        by_stream[key[:2]].append(key)
    got: dict[tuple[str, str], list[tuple[object, ...]]] = defaultdict(list)
    for tick in ticks:
        key, value = received_values(tick)
        got[key[:2]].append((key[2], value))
    for (symbol, kind), keys in by_stream.items():
        received = got[(symbol, kind)]
        assert len(received) == len(keys), f"{symbol} {kind}: {len(received)} of {len(keys)}"
        for (tick_id, value), key in zip(received, keys, strict=True):
            assert tick_id in ("", key[2]), f"{symbol} {kind}: {tick_id} where {key[2]} was due"
            assert value == expected[key], f"{key}: {value} != {expected[key]}"
        if kind == "trade":
            ids = [int(tick_id) for tick_id, _ in received]
            assert ids == list(range(ids[0], ids[0] + len(ids))), "trade ids contiguous"
    assert set(got) == set(by_stream)
    sequences: dict[tuple[str, str | None], list[int]] = defaultdict(list)
    for tick in ticks:
        sequences[(tick.symbol, tick.WhichOneof("body"))].append(tick.sequence)
    for key, numbers in sequences.items():
        assert numbers == list(range(1, len(numbers) + 1)), f"{key}: sequence not contiguous"
    assert all(a.offset < b.offset for a, b in itertools.pairwise(ticks))


async def test_feed_gets_every_trade_and_quote_once_across_two_drops() -> None:
    """Acceptance: ``--source binance`` against the local server, which drops the connection
    twice (no close frame) and resends the 50 messages before each drop on reconnect: every
    recorded trade and quote arrives once, value-exact; no trade is missing or repeated."""
    messages, served = served_slice()
    started = time.monotonic()
    snapshots = recorded_snapshots([BTC_FILE, ETH_FILE])
    exchange = ExchangeServer(
        messages, drop_every=DROP_EVERY, drops=2, rewind=REWIND, snapshots=snapshots
    )
    with exchange:
        args = ("--source", "binance", "--symbols", ",".join(SYMBOLS), "--bar-intervals", "")
        urls = ("--binance-url", exchange.url, "--binance-rest-url", exchange.rest_url)
        feed = start_feed(*args, *urls)  # no bars: offsets are ticks
        with services(feed):
            assert await asyncio.to_thread(exchange.wait_finished, 30), feed.output()
            everything, head = await read_history(f"127.0.0.1:{feed.port}", len(served))
            async with grpc.aio.insecure_channel(f"127.0.0.1:{feed.port}") as channel:
                stub = feed_pb2_grpc.FeedServiceStub(channel)
                symbols = await stub.ListSymbols(feed_pb2.ListSymbolsRequest())
                sources = await stub.ListSources(feed_pb2.ListSourcesRequest())
    elapsed = time.monotonic() - started
    assert head == everything[-1].offset, "no extra tick"
    ticks = [t for t in everything if not t.HasField("book")]
    assert len(ticks) == len(served) == 18_145
    check_exactly_once(ticks, served)
    books = [(t.symbol, t.book) for t in everything if t.HasField("book")]
    check_books(books, exchange)
    # The resent messages close each drop: no book gap (a snapshot may be asked for again when
    # a drop cancelled its fetch)
    assert not any(" book: " in line for line in feed.lines), feed.output()
    assert exchange.connections == 3 and exchange.drops_done == 2
    streamed = [m for m in messages if m.stream in STREAMS | DEPTH_STREAMS]
    assert exchange.sent == len(streamed) + 2 * REWIND, "the server did resend 100 messages"
    assert all(p.startswith("/stream?streams=") for p in exchange.paths)
    assert [(s.symbol, s.price_scale, s.size_scale, s.source) for s in symbols.symbols] == [
        (s, 8, 8, "binance:binance-spot") for s in SYMBOLS
    ]
    (source,) = [s for s in sources.sources if s.name == "binance"]
    assert source.ticks == len(everything)
    lost = [line for line in feed.lines if "binance: connection lost" in line]
    assert len(lost) == 2, feed.output()
    print(
        f"\nbinance acceptance: {len(ticks)} trades and quotes once each and {len(books)} "
        f"book updates over 3 connections, {exchange.sent - len(streamed)} resent messages "
        f"dropped, {elapsed:.1f} s in all"
    )


class RecordingHandle(SourceHandle):
    """A SourceHandle that also lists the connector's ``connected``/``down`` calls."""

    def __init__(self) -> None:
        super().__init__("binance")
        self.calls: list[tuple[str, str]] = []

    def connected(self, detail: str = "") -> None:
        self.calls.append(("connected", detail))
        super().connected(detail)

    def down(self, detail: str) -> None:
        self.calls.append(("down", detail))
        super().down(detail)


async def wait_until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 - polling counters another thread moves
        await asyncio.sleep(0.01)


async def test_source_reports_its_connection_and_survives_a_paused_server() -> None:
    """In process, no feed: ``handle.connected()`` on each connect and ``handle.down(reason)``
    on the loss; a paused server sends nothing and keeps the connection open; on resume the
    stream continues with no repeat and no gap."""
    messages = recorded_messages([BTC_FILE, ETH_FILE], 3_300)
    served = [m for m in messages if m.stream in STREAMS]
    # paced (about 1 s in all) so that the pause lands mid-stream
    exchange = ExchangeServer(messages, drop_every=1_000, drops=1, rewind=REWIND, rate=3_000)
    handle = RecordingHandle()
    got: list[str] = []

    async def consume(source: BinanceSource) -> None:
        async for batch in source.batches(handle):
            got.extend(draft.dedup_id for draft in batch)

    with exchange:
        lowered = [s.lower() for s in SYMBOLS]
        source = BinanceSource(lowered, exchange.url, depth=0, backoff=Backoff(0.05))
        await source.load()
        task = asyncio.create_task(consume(source))
        try:
            async with asyncio.timeout(20):
                await wait_until(lambda: exchange.drops_done == 1 and len(got) >= 1_200)
                exchange.pause()
                await asyncio.sleep(0.2)  # what was in flight arrives
                paused_at = len(got)
                await asyncio.sleep(0.5)
                assert len(got) == paused_at < len(served), "paused: nothing more"
                assert exchange.connections == 2 and handle.state == CONNECTED
                exchange.resume()
                await wait_until(lambda: len(got) >= len(served))
                await asyncio.sleep(0.2)  # a repeat would arrive now
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    expected = [
        ("t:" if m.stream.endswith("@trade") else "u:")
        + str(json.loads(m.text)["data"]["t" if m.stream.endswith("@trade") else "u"])
        for m in served
    ]
    assert got == expected
    assert source.repeats == REWIND
    assert [call for call, _ in handle.calls] == ["connected", "down", "connected"]
    assert "no close frame" in handle.calls[1][1] and "reconnecting in" in handle.calls[1][1]


async def test_unreachable_endpoint_is_retried_with_growing_delays() -> None:
    """A refused connection is reported with ``handle.down`` and retried with backoff, the
    source never ending or raising."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: connections are refused
    handle = RecordingHandle()
    url = f"ws://127.0.0.1:{port}"
    source = BinanceSource(["BTCUSDT"], url, depth=0, backoff=Backoff(0.02, 1.0))
    await source.load()

    async def consume() -> None:
        async for _ in source.batches(handle):
            raise AssertionError("no tick can arrive")

    task = asyncio.create_task(consume())
    try:
        async with asyncio.timeout(10):
            await wait_until(lambda: len(handle.calls) >= 4 or task.done())
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert [call for call, _ in handle.calls[:4]] == ["down"] * 4
    assert all("cannot connect to 127.0.0.1" in detail for _, detail in handle.calls)
    delays = [
        float(detail.rsplit("reconnecting in ", 1)[1].split()[0]) for _, detail in handle.calls
    ]
    assert delays[3] > delays[0] and handle.state == STALE


BookUpdates = list[tuple[str, tick_pb2.BookUpdate]]


async def collect_books(
    source: BinanceSource, exchange: ExchangeServer, symbols: Iterable[str] = SYMBOLS
) -> BookUpdates:
    """Run ``source`` in process until the exchange has sent everything and the books of
    ``symbols`` have reached its books' last update ids (30 s at most); its book updates."""
    books: BookUpdates = []

    def settled() -> bool:
        last = {symbol: update.last_update_id for symbol, update in books}
        wanted = {symbol: exchange.books[symbol].last_id for symbol in symbols}
        return exchange.wait_finished(0) and all(last.get(s) == i for s, i in wanted.items())

    async def consume() -> None:
        async for batch in source.batches(RecordingHandle()):
            books.extend((d.symbol, d.book) for d in batch if d.HasField("book"))

    if not source.symbols:
        await source.load()
    task = asyncio.create_task(consume())
    try:
        async with asyncio.timeout(30):
            await wait_until(settled)
        await asyncio.sleep(0.2)  # a repeat would arrive now
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return books


async def test_lost_depth_diffs_break_the_book_and_a_new_snapshot_mends_it() -> None:
    """The connection drops and 1,000 messages are lost with it, depth diffs among them (their
    changes are in the exchange's book): the connector notices the broken update chain, counts
    it, publishes nothing of that book until a new snapshot, then ends with the exchange's
    book, level for level."""
    messages = recorded_messages([BTC_FILE, ETH_FILE], 8_000)
    snapshots = recorded_snapshots([BTC_FILE, ETH_FILE])
    exchange = ExchangeServer(
        messages, drop_every=3_000, drops=1, lose=1_000, snapshots=snapshots, rate=3_000
    )
    gaps: list[None] = []
    with exchange:
        source = BinanceSource(
            list(SYMBOLS),
            exchange.url,
            rest_url=exchange.rest_url,
            on_book_gap=lambda: gaps.append(None),
            backoff=Backoff(0.05),
        )
        await source.load()
        assert source.books is not None
        source.books.spacing_s = 0.05  # both books in sync well before the drop (after 1 s)
        books = await collect_books(source, exchange)
    assert len(gaps) == source.book_gaps == 2, "one break a symbol"
    assert sorted(exchange.snapshot_requests) == sorted(2 * SYMBOLS)
    assert sum(update.snapshot for _, update in books) == 4
    check_books(books, exchange)


@pytest.mark.parametrize("eth", ["missing", "crossed", "hanging"])
async def test_a_failing_snapshot_is_retried_and_other_symbols_go_on(eth: str) -> None:
    """The exchange has no book for ETHUSDT (404), a crossed one (best bid above best ask,
    which the ingest path would refuse), or never answers: its snapshot is asked for again
    with backoff and no ETHUSDT book is published; BTCUSDT's book is whole, not held back."""
    messages = recorded_messages([BTC_FILE, ETH_FILE], 8_000)
    snapshots = recorded_snapshots([BTC_FILE, ETH_FILE])
    if eth == "missing":
        del snapshots["ETHUSDT"]
    elif eth == "crossed":
        snapshots["ETHUSDT"]["bids"][0][0] = "999999.00000000"
    hang = frozenset({"ETHUSDT"} if eth == "hanging" else ())
    exchange = ExchangeServer(messages, snapshots=snapshots, rate=4_000, hang=hang)
    with exchange:
        source = BinanceSource(list(SYMBOLS), exchange.url, rest_url=exchange.rest_url)
        books = await collect_books(source, exchange, ["BTCUSDT"])
    asked = exchange.snapshot_requests.count("ETHUSDT")
    least = 1 if eth == "hanging" else 2  # a hanging request fails after 10 s
    assert least <= asked <= 10, "retried with backoff (1 s doubling), not in a loop"
    check_books(books, exchange, ["BTCUSDT"])
    assert source.book_gaps == 0 and source.malformed == 0


async def test_books_are_snapshotted_again_while_they_change() -> None:
    """Every ``refresh_s`` each synced book is fetched again: while the exchange's book
    changes each refresh is published as a new snapshot (a replica joining a JetStream
    backbone later starts from a recent one), and the book stays exactly the exchange's."""
    messages = recorded_messages([BTC_FILE, ETH_FILE], 8_000)
    snapshots = recorded_snapshots([BTC_FILE, ETH_FILE])
    exchange = ExchangeServer(messages, snapshots=snapshots, rate=2_500)
    with exchange:
        source = BinanceSource(list(SYMBOLS), exchange.url, rest_url=exchange.rest_url)
        await source.load()
        assert source.books is not None
        source.books.refresh_s, source.books.spacing_s = 0.5, 0.05
        books = await collect_books(source, exchange)
    for symbol in SYMBOLS:
        ids = [u.last_update_id for s, u in books if s == symbol and u.snapshot]
        assert len(set(ids)) >= 3 and ids == sorted(ids), (symbol, ids)  # never back in time
    check_books(books, exchange)
    assert source.book_gaps == 0
