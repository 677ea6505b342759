"""Sources: the replay parser on real and crafted files, the synthetic generator."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from tickstream.v1 import tick_pb2

from feed_service.sources.replay import ReplayError, load_recording
from feed_service.sources.synthetic import SyntheticSource, format_scaled
from tests.support import BTC_FILE


def test_real_file_parses_trades_and_quotes_exactly() -> None:
    ticks, infos = load_recording([BTC_FILE])
    assert [i.symbol for i in infos] == ["BTCUSDT"]
    assert (infos[0].price_scale, infos[0].size_scale) == (8, 8)
    assert infos[0].source == "replay:binance-spot"
    trades = [t for t in ticks if isinstance(t.body, tick_pb2.Trade)]
    quotes = [t for t in ticks if isinstance(t.body, tick_pb2.Quote)]
    assert (len(trades), len(quotes)) == (9_757, 28_040)
    first = trades[0]
    assert first.body.price == "61837.63000000"
    assert first.body.trade_id == "3735683259"
    assert first.body.side == tick_pb2.SIDE_SELL  # "m": true, the buyer was the maker
    assert first.event_time_ns == 1723161255342 * 1_000_000  # exchange time T
    receive = [t.receive_ns for t in ticks]
    assert receive == sorted(receive)


def write_lines(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt") as out:
        out.write("\n".join(lines) + "\n")
    return path


def test_perpetual_symbols_are_namespaced_and_garbage_skipped(tmp_path: Path) -> None:
    perp = {
        "e": "trade",
        "E": 2,
        "T": 2,
        "s": "BTCUSDT",
        "t": 9,
        "p": "61800.30",
        "q": "0.006",
        "X": "MARKET",
        "m": False,
    }
    book = {"s": "BTCUSDT", "u": 1, "b": "1.0", "B": "2", "a": "1.1", "A": "3", "T": 5, "E": 5}
    path = write_lines(
        tmp_path / "usdm.gz",
        [
            "100 " + json.dumps({"stream": "btcusdt@trade", "data": perp}),
            "not a line at all",
            "101 {broken json",
            "102 " + json.dumps({"lastUpdateId": 1, "bids": [], "asks": []}),
            "103 " + json.dumps({"stream": "btcusdt@bookTicker", "data": book}),
            "104 " + json.dumps({"stream": "btcusdt@trade", "data": {"s": "BTCUSDT"}}),
            "105 " + json.dumps({"stream": "x@trade", "data": {**perp, "s": "bad\nsym"}}),
        ],
    )
    ticks, infos = load_recording([path])
    books = [t for t in ticks if isinstance(t.body, tick_pb2.BookUpdate)]
    assert [(b.receive_ns, b.body.snapshot, b.body.last_update_id) for b in books] == [
        (102, True, 1)
    ], "the REST snapshot is the file's symbol's book"
    ticks = [t for t in ticks if t not in books]
    assert [t.symbol for t in ticks] == ["BTCUSDT-PERP", "BTCUSDT-PERP"]
    assert infos[0].source == "replay:binance-usdm"
    assert ticks[1].event_time_ns == 5_000_000, "bookTicker T is the event time"
    assert ticks[0].body.side == tick_pb2.SIDE_BUY


def test_missing_or_empty_paths_raise(tmp_path: Path) -> None:
    with pytest.raises(ReplayError):
        load_recording([tmp_path / "missing.gz"])
    with pytest.raises(ReplayError):
        load_recording([tmp_path])
    with pytest.raises(ReplayError):
        load_recording([write_lines(tmp_path / "empty.gz", ["1 {}"])])


def test_synthetic_is_deterministic_for_a_seed() -> None:
    def bodies(seed: int) -> list[str]:
        source = SyntheticSource(["AAA", "BBB"], seed=seed, rate=100)
        return [str(source.next_draft(0)) for _ in range(200)]

    assert bodies(7) == bodies(7)
    assert bodies(7) != bodies(8)


def test_format_scaled_is_exact() -> None:
    assert format_scaled(1234, 2) == "12.34"
    assert format_scaled(5, 2) == "0.05"
    assert format_scaled(-5, 2) == "-0.05"
    assert format_scaled(7, 0) == "7"
