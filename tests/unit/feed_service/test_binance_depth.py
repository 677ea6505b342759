"""The binance source's books, pure parts: diff and snapshot parsing, when a snapshot is wanted,
gaps reported once, dedup ids, and a malformed diff kept away from the book."""

from __future__ import annotations

import json

import httpx
import pytest

from feed_service.sources.binance import BinanceSource
from feed_service.sources.binance_depth import (
    DepthBooks,
    DepthDiff,
    MessageError,
    Snapshot,
    parse_diff,
    parse_snapshot,
    request_weight,
    retry_after_s,
    retry_delay,
)
from feed_service.sources.depth import ChainBreak, Diff

DIFF = {"e": "depthUpdate", "E": 1723161255208, "s": "BTCUSDT", "U": 11, "u": 12}
LEVELS = {"b": [["61837.63000000", "1.00000000"]], "a": [["61837.64000000", "0.00000000"]]}


def diff(first: int, last: int) -> DepthDiff:
    return DepthDiff("BTCUSDT", Diff(first, last, [["1.0", "2.0"]], []), 7)


def books_and_gaps() -> tuple[DepthBooks, list[tuple[str, ChainBreak, bool]]]:
    gaps: list[tuple[str, ChainBreak, bool]] = []
    return DepthBooks(["BTCUSDT"], 1000, lambda *gap: gaps.append(gap)), gaps


def test_diff_maps_update_ids_levels_and_event_time() -> None:
    message = parse_diff("BTCUSDT", {**DIFF, **LEVELS})
    assert (message.diff.first, message.diff.last) == (11, 12)
    assert message.diff.bids == [["61837.63000000", "1.00000000"]]
    assert message.event_ns == 1723161255208 * 1_000_000


@pytest.mark.parametrize(
    "bad",
    [
        {**DIFF, "U": 13, **LEVELS},  # U above u
        {**DIFF, "b": [["1.0"]], "a": []},  # a level without its size
        {**DIFF, "b": [[1.0, 2.0]], "a": []},  # numbers, not strings
        {**DIFF, "b": "none", "a": []},
        {k: v for k, v in {**DIFF, **LEVELS}.items() if k != "E"},
    ],
)
def test_malformed_diffs_are_message_errors(bad: dict[str, object]) -> None:
    with pytest.raises(MessageError):
        parse_diff("BTCUSDT", bad)


def test_snapshot_must_be_an_object_with_id_and_levels() -> None:
    good = parse_snapshot("BTCUSDT", {"lastUpdateId": 5, "bids": [["1", "2"]], "asks": []})
    assert (good.last_update_id, good.bids, good.failure) == (5, [["1", "2"]], "")
    for bad in ([], {"bids": [], "asks": []}, {"lastUpdateId": -1, "bids": [], "asks": []}):
        with pytest.raises(MessageError):
            parse_snapshot("BTCUSDT", bad)


async def test_first_diff_wants_a_snapshot_which_publishes_book_and_buffered_diffs() -> None:
    books, gaps = books_and_gaps()
    assert books.on_diff(diff(8, 10)) == [] and books.on_diff(diff(11, 12)) == []
    assert books._wanted.qsize() == 1, "wanted once, however many diffs wait"
    drafts = books.on_snapshot(Snapshot("BTCUSDT", 10, [["1.0", "1.0"]], [["2.0", "1.0"]]), 99)
    assert [d.dedup_id for d in drafts] == ["s:10", "d:12"]
    assert drafts[0].book.snapshot and drafts[0].event_time.ToNanoseconds() == 99
    assert [d.dedup_id for d in books.on_diff(diff(13, 15))] == ["d:15"]
    assert gaps == []


async def test_a_gap_is_reported_once_and_wants_a_new_snapshot() -> None:
    books, gaps = books_and_gaps()
    books.on_diff(diff(1, 2))
    books.on_snapshot(Snapshot("BTCUSDT", 2), 1)
    books.restart()  # a new connection: nothing wanted
    assert books.on_diff(diff(9, 10)) == [] and books.on_diff(diff(11, 12)) == []
    assert len(gaps) == 1 and gaps[0][1].after == 2 and gaps[0][1].first == 9
    assert gaps[0][2], "the first diff after a reconnect"
    assert books._wanted.qsize() == 1
    assert books.on_snapshot(Snapshot("BTCUSDT", 5), 1) == [], "older than the buffered diffs"
    assert len(gaps) == 1 and books._wanted.qsize() == 2, "not a gap: wanted again"
    assert [d.dedup_id for d in books.on_snapshot(Snapshot("BTCUSDT", 10), 1)] == ["s:10", "d:12"]
    books.on_diff(diff(20, 21))
    assert len(gaps) == 2 and not gaps[1][2], "a break mid-connection"


def test_a_diff_with_a_bad_decimal_is_skipped_before_its_book_takes_it() -> None:
    source = BinanceSource(["BTCUSDT"], "ws://127.0.0.1:9")
    source.symbols = frozenset({"BTCUSDT"})
    source.books, _ = books_and_gaps()

    def framed(data: dict[str, object]) -> str:
        return json.dumps({"stream": "btcusdt@depth@100ms", "data": data})

    bad = {**DIFF, "b": [["6e4", "1.0"]], "a": []}
    assert source.accept(framed(bad), 1) == [] and source.malformed == 1
    assert not source.books.syncs["BTCUSDT"]._pending, "the book never saw it"
    assert source.accept(framed({**DIFF, **LEVELS}), 1) == [], "buffered until a snapshot"
    assert source.malformed == 1


def test_without_books_a_depth_message_is_unexpected() -> None:
    source = BinanceSource(["BTCUSDT"], "ws://127.0.0.1:9", depth=0)
    source.symbols = frozenset({"BTCUSDT"})
    message = json.dumps({"stream": "btcusdt@depth@100ms", "data": {**DIFF, **LEVELS}})
    assert source.accept(message, 1) == [] and source.malformed == 1
    assert "depth@100ms" not in source.kinds


def test_snapshots_are_paced_by_request_weight_and_retries_back_off() -> None:
    assert [request_weight(n) for n in (5, 100, 500, 1000, 5000)] == [5, 5, 25, 50, 250]
    books, _ = books_and_gaps()
    assert books.spacing_s == 0.6, "1,000 levels: 50 of 5,000 a minute"
    assert 0.5 <= retry_delay(1) <= 1.0 and 15.0 <= retry_delay(40) <= 30.0
    assert retry_after_s(httpx.Response(429, headers={"Retry-After": "7"})) == 7.0
    assert retry_after_s(httpx.Response(418, headers={"Retry-After": "x"})) == 0.0
    assert retry_after_s(httpx.Response(503, headers={"Retry-After": "7"})) == 0.0


def test_ids_beyond_what_a_tick_can_hold_are_message_errors() -> None:
    with pytest.raises(MessageError):
        parse_diff("BTCUSDT", {**DIFF, "u": 2**64, **LEVELS})
