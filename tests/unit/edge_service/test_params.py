"""Cursor, parameter parsing and SSE encoding: pure functions of the edge."""

from __future__ import annotations

import json

import pytest
from tickstream.v1 import tick_pb2

from edge_service.cursor import EARLIEST, Cursor, MalformedCursor, parse_cursor
from edge_service.encoding import encode_control, encode_tick
from edge_service.params import check_known, parse_depth, parse_symbols, parse_types
from edge_service.problems import Problem


def test_cursor_round_trip_and_earliest() -> None:
    assert parse_cursor("ab12-42") == Cursor("ab12", 42)
    assert str(Cursor("ab12", 42)) == "ab12-42"
    assert parse_cursor(" earliest ") == EARLIEST


@pytest.mark.parametrize(
    "value",
    [
        "",
        "42",
        "ab12-",
        "-5",
        "ab12--5",
        "AB12-5",
        "ab12-5x",
        "ab12-99999999999999999999",
        "x" * 200,
    ],
)
def test_malformed_cursors_are_refused(value: str) -> None:
    with pytest.raises(MalformedCursor):
        parse_cursor(value)


def test_symbols_are_split_deduplicated_and_checked() -> None:
    assert parse_symbols(["BTCUSDT,ETHUSDT", "BTCUSDT"], 200) == ["BTCUSDT", "ETHUSDT"]
    with pytest.raises(Problem) as raised:
        parse_symbols(["A,B,C"], 2)
    assert raised.value.status == 400 and raised.value.kind == "too-many-symbols"
    for bad in ["", ",", "btc", "A B", "A\nB", "É", "A" * 33, "-A", " A", "A\n", "A\t"]:
        with pytest.raises(Problem):
            parse_symbols([bad], 200)


def test_types() -> None:
    assert parse_types(None) == {"trade", "quote"}
    assert parse_types(["book,trade"]) == {"trade", "book"}
    assert parse_types(["trade"]) == {"trade"}
    assert parse_types(["trade", "quote"]) == {"trade", "quote"}
    for bad in ["", "trades", "trade,", "TRADE"]:
        with pytest.raises(Problem):
            parse_types([bad])


def test_depth_is_1_to_100_levels() -> None:
    assert parse_depth(None) == 10
    assert parse_depth("1") == 1 and parse_depth("100") == 100
    for bad in ["0", "101", "", "-1", "1.5", "ten", "\u0661"]:
        with pytest.raises(Problem) as caught:
            parse_depth(bad)
        assert caught.value.status == 400 and "depth" in caught.value.detail


def test_unknown_parameters_are_named() -> None:
    check_known(["types", "depth"], {"types", "depth", "snapshot"})
    with pytest.raises(Problem) as caught:
        check_known(["types", "dpeth"], {"types", "depth"})
    assert caught.value.status == 400
    assert "'dpeth'" in caught.value.detail and "depth, types" in caught.value.detail


def test_tick_event_is_one_json_line_with_id_and_name() -> None:
    tick = tick_pb2.Tick(symbol="BTCUSDT", sequence=3, offset=77)
    tick.trade.price = "61837.63000000"
    tick.trade.size = "0.02000000"
    encoded = encode_tick(tick, "ab12")
    lines = encoded.frame.decode().split("\n")
    assert lines[:2] == ["id: ab12-77", "event: trade"]
    assert lines[2].startswith("data: ") and lines[3:] == ["", ""]
    data = json.loads(lines[2][6:])
    assert data["trade"]["price"] == "61837.63000000"
    assert data["offset"] == "77"
    assert (encoded.offset, encoded.kind, encoded.symbol) == (77, "trade", "BTCUSDT")


def test_control_event_cannot_be_broken_by_its_payload() -> None:
    frame = encode_control("reset", {"message": "evil\n\ndata: injected\nid: 1"}).decode()
    assert frame.count("\n\n") == 1 and frame.endswith("\n\n")
    assert "\ndata: injected" not in frame
