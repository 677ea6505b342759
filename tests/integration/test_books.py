"""Order books end to end: the feed builds BTCUSDT's book from the recorded snapshot and depth
diffs, the edge streams the top levels; both checked against a book rebuilt here, from the file,
independently of the services' code (issue 13, acceptance 1 and 2)."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from tickstream.v1 import ingest_pb2, tick_pb2

from tests.conftest import BARS, Stack, running_stack
from tests.integration.test_publish import Refused, batch, publish
from tests.support import (
    BTC_FILE,
    SseEvent,
    collect,
    iter_events,
    metric_value,
    replay_args,
    services,
    start_edge,
    start_feed,
)

DEPTH = 20
Top = tuple[list[tuple[str, str]], list[tuple[str, str]]]


def _depth_lines(path: Path) -> Iterator[tuple[str, dict]]:
    with gzip.open(path, "rt") as lines:
        for line in lines:
            message = json.loads(line.partition(" ")[2])
            if "lastUpdateId" in message:
                yield "snapshot", message
            elif message.get("stream", "").endswith("@depth@100ms"):
                yield "diff", message["data"]


def rebuild_book(path: Path, depth: int = DEPTH) -> dict[int, Top]:
    """The top ``depth`` levels a side after every update the exchange's rules apply, by update
    id: the REST snapshot, then the diffs that follow it (those it covers dropped, the first
    straddling its id, each next one starting where the last ended)."""
    sides: dict[str, dict[Decimal, tuple[str, str]]] = {"b": {}, "a": {}}
    pending: list[dict] = []
    last = None
    tops: dict[int, Top] = {}

    def apply(side: str, levels: list[list[str]]) -> None:
        for price, size in levels:
            if Decimal(size) == 0:
                sides[side].pop(Decimal(price), None)
            else:
                sides[side][Decimal(price)] = (price, size)

    def top() -> Top:
        bids = [sides["b"][k] for k in sorted(sides["b"], reverse=True)[:depth]]
        asks = [sides["a"][k] for k in sorted(sides["a"])[:depth]]
        return bids, asks

    for kind, message in _depth_lines(path):
        if kind == "snapshot":
            apply("b", message["bids"])
            apply("a", message["asks"])
            last = message["lastUpdateId"]
            tops[last] = top()
            diffs, first = pending, True
        elif last is None:
            pending.append(message)
            continue
        else:
            diffs, first = [message], False
        for diff in diffs:
            if diff["u"] <= last:
                continue
            if first:
                assert diff["U"] <= last + 1 <= diff["u"]
                first = False
            elif diff["U"] != last + 1:
                return tops  # the chain broke: nothing after it is a true book
            apply("b", diff["b"])
            apply("a", diff["a"])
            last = diff["u"]
            tops[last] = top()
    return tops


def event_top(event: SseEvent) -> tuple[int, Top]:
    book = json.loads(event.data)["book"]
    bids = [(level["price"], level["size"]) for level in book["bids"]]
    asks = [(level["price"], level["size"]) for level in book["asks"]]
    return int(book["lastUpdateId"]), (bids, asks)


@pytest.fixture(scope="module")
def expected() -> dict[int, Top]:
    return rebuild_book(BTC_FILE)


def assert_books_match(events: list[SseEvent], expected: dict[int, Top]) -> list[int]:
    """Every book event equals the rebuilt book at its update id; the ids, in order."""
    ids = []
    for event in events:
        update_id, top = event_top(event)
        assert update_id in expected, f"book at update id {update_id}, not one the file has"
        assert top == expected[update_id], f"book differs at update id {update_id}"
        ids.append(update_id)
    return ids


async def test_replayed_book_equals_the_book_rebuilt_from_the_file(
    replay_stack: Stack, http: httpx.AsyncClient, expected: dict[int, Top]
) -> None:
    """Acceptance 1: every book event of BTCUSDT's replay (read from the start of the history,
    3,450 updates) holds the top 20 levels of the independently rebuilt book at its update id,
    value-exact strings, in update order; and a live ``snapshot=true`` ends at the last one."""
    url = f"{replay_stack.base_url}/sse/BTCUSDT?types=book&depth={DEPTH}&last_event_id=earliest"
    events = await collect(http, url, len(expected), kinds=("book",), within=60)
    books = [e for e in events if e.event == "book"]
    ids = assert_books_match(books, expected)
    assert ids == sorted(expected), "every update once, in order"
    first, middle, last = ids[0], ids[len(ids) // 2], ids[-1]
    assert {first, middle, last} <= expected.keys()
    url = f"{replay_stack.base_url}/sse/BTCUSDT?types=book&depth={DEPTH}&snapshot=true"
    (snapshot,) = await collect(http, url, 1, kinds=("book",))
    assert snapshot.id is None  # a value, not a position
    assert event_top(snapshot) == (last, expected[last])


async def test_live_book_events_match_at_depth_and_resume(
    http: httpx.AsyncClient, expected: dict[int, Top]
) -> None:
    """The shared upstream's live path: a client following the replay at 30x sees only true
    books at its depth (5 levels); a client resuming from a mid-replay id gets the books after
    it, starting from the feed's book at that point."""
    shallow = {uid: (bids[:5], asks[:5]) for uid, (bids, asks) in expected.items()}
    stack_iter = running_stack(replay_args(BTC_FILE, speed="30"))
    stack = next(stack_iter)
    try:
        url = f"{stack.base_url}/sse/BTCUSDT?types=book,trade&depth=5&snapshot=true"
        events = await collect(http, url, 400, kinds=("book",), within=60)
        books = [e for e in events if e.event == "book"]
        assert_books_match(books, shallow)
        assert any(e.event == "trade" for e in events)
        middle = books[len(books) // 2]
        assert middle.id is not None
        resumed = await collect(
            http,
            f"{stack.base_url}/sse/BTCUSDT?types=book&depth=5",
            50,
            headers={"Last-Event-ID": middle.id},
            kinds=("book",),
        )
        resumed_books = [e for e in resumed if e.event == "book"]
        assert resumed_books[0].offset > middle.offset
        ids = assert_books_match(resumed_books, shallow)
        order = sorted(shallow)
        start = order.index(event_top(middle)[0])
        assert ids == order[start + 1 : start + 1 + len(ids)], "no update skipped or repeated"
    finally:
        stack_iter.close()


def without_one_diff(source: Path, target: Path, skip_after_snapshot: int) -> int:
    """Copy ``source`` leaving out the depth diff number ``skip_after_snapshot`` after the
    REST snapshot; the update id the book stops at (the last diff kept before it)."""
    seen_snapshot, count, stop_at = False, 0, 0
    with gzip.open(source, "rt") as lines, gzip.open(target, "wt") as out:
        for line in lines:
            payload = line.partition(" ")[2]
            if '"lastUpdateId"' in payload[:20]:
                seen_snapshot = True
            elif seen_snapshot and "@depth@100ms" in payload[:40]:
                count += 1
                if count == skip_after_snapshot:
                    continue
                if count == skip_after_snapshot - 1:
                    stop_at = json.loads(payload)["data"]["u"]
            out.write(line)
    return stop_at


async def test_a_broken_update_chain_stops_the_book_never_a_wrong_one(
    tmp_path: Path, http: httpx.AsyncClient, expected: dict[int, Top]
) -> None:
    """Acceptance 2: a recording with one diff removed. The feed logs the break and counts it
    (tickstream_feed_book_gaps_total); the book is published up to the update before the gap
    and never after it (no later snapshot in the file); trades and quotes go on."""
    broken = tmp_path / "btcusdt_gap.gz"
    stop_at = without_one_diff(BTC_FILE, broken, 500)
    feed = start_feed(*replay_args(broken, speed="0"))
    with services(feed):
        edge = start_edge(feed.port)
        with services(edge):
            feed.wait_for_line(r"BTCUSDT book: depth diff starts at update id \d+ but the book")
            assert metric_value(feed, "tickstream_feed_book_gaps_total") == 1
            base = f"http://127.0.0.1:{edge.port}"
            url = f"{base}/sse/BTCUSDT?types=book,trade&depth={DEPTH}&last_event_id=earliest"
            events = await collect(http, url, 9_000, kinds=("trade",), within=60)
    books = [e for e in events if e.event == "book"]
    ids = assert_books_match(books, expected)
    assert ids[-1] == stop_at
    assert books[-1].offset < max(e.offset for e in events if e.event == "trade")


def book_draft(
    bids: list[tuple[str, str]], asks: list[tuple[str, str]], snapshot: bool
) -> ingest_pb2.TickDraft:
    update = tick_pb2.BookUpdate(snapshot=snapshot)
    update.bids.extend(tick_pb2.BookLevel(price=p, size=s) for p, s in bids)
    update.asks.extend(tick_pb2.BookLevel(price=p, size=s) for p, s in asks)
    return ingest_pb2.TickDraft(symbol="PROD", book=update)


async def test_a_producer_publishes_books_and_trades_and_latest_shows_them(
    http: httpx.AsyncClient,
) -> None:
    """Books through Publish (a snapshot, then an update removing and adding levels) reach an
    SSE client at its depth; the producer's trades make bars; ``GET /latest`` shows the latest
    trade, book and open bars; a bar from a producer is refused naming the field."""
    feed = start_feed("--source", "none", *BARS)
    with services(feed):
        edge = start_edge(feed.port)
        with services(edge):
            target = f"127.0.0.1:{feed.port}"
            snapshot = book_draft([("10.0", "1"), ("9.5", "2")], [("10.5", "3")], snapshot=True)
            update = book_draft([("10.0", "0"), ("9.75", "4")], [("10.25", "1")], snapshot=False)
            trade = ingest_pb2.TickDraft(
                symbol="PROD", trade=tick_pb2.Trade(price="10.1", size="2", trade_id="1")
            )
            await publish(target, [batch(snapshot, trade)])
            base = f"http://127.0.0.1:{edge.port}"
            url = f"{base}/sse/PROD?types=book&depth=1&snapshot=true"
            async with http.stream("GET", url) as response:
                events = []
                async for event in _events(response):
                    events.append(event)
                    if len(events) == 1:
                        await publish(target, [batch(update)])
                    if len(events) == 2:
                        break
            tops = [event_top_any(e) for e in events]
            assert tops == [([("10.0", "1")], [("10.5", "3")]), ([("9.75", "4")], [("10.25", "1")])]
            latest = (await http.get(f"{base}/latest?symbols=PROD")).json()["symbols"]["PROD"]
            assert latest["trade"]["trade"]["price"] == "10.1"
            assert [lv["price"] for lv in latest["book"]["book"]["bids"]] == ["9.75", "9.5"]
            assert set(latest["bars"]) == {"1s", "1m"}
            assert latest["bars"]["1m"]["bar"]["open"] == "10.1"
            bar = ingest_pb2.TickDraft(symbol="PROD", bar=tick_pb2.Bar(interval="1m"))
            with pytest.raises(Refused) as refused:
                await publish(target, [batch(bar)])
            assert "ticks[0].bar" in refused.value.details


async def _events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    async for event in iter_events(response):
        if event.event == "book":
            yield event


def event_top_any(event: SseEvent) -> Top:
    book = json.loads(event.data)["book"]
    return (
        [(level["price"], level["size"]) for level in book["bids"]],
        [(level["price"], level["size"]) for level in book["asks"]],
    )
