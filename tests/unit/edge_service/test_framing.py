"""Framing safety (issue 3, behaviour 8): no string that reaches an event can break SSE framing
or inject a field. Property-based over arbitrary text."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from tickstream.v1 import tick_pb2

from edge_service.encoding import encode_control, encode_tick
from tickstream_common.symbols import is_valid_symbol

FIELDS = ("id", "event", "data", "retry")


def assert_one_event(frame: bytes) -> dict[str, str]:
    """Exactly one event: known fields only, one line each, one blank line at the end."""
    text = frame.decode("utf-8")
    assert text.endswith("\n\n") and "\n\n" not in text[:-2]
    assert "\r" not in text
    fields = {}
    for line in text[:-2].split("\n"):
        name, _, value = line.partition(": ")
        assert name in FIELDS, line
        assert name not in fields, f"{name} twice"
        fields[name] = value
    return fields


@given(st.text(), st.text(), st.text())
def test_control_events_stay_one_event_whatever_the_text(
    message: str, extra: str, key: str
) -> None:
    fields = assert_one_event(encode_control("reset", {key: extra, "message": message}))
    assert json.loads(fields["data"])["message"] == message


@given(st.text(), st.text(), st.text(), st.text())
def test_tick_events_stay_one_event_whatever_the_strings(
    symbol: str, price: str, size: str, trade_id: str
) -> None:
    tick = tick_pb2.Tick(symbol=symbol, offset=1, sequence=1)
    tick.trade.price, tick.trade.size, tick.trade.trade_id = price, size, trade_id
    fields = assert_one_event(encode_tick(tick, "ab12").frame)
    assert json.loads(fields["data"])["trade"].get("price", "") == price
    assert fields["id"] == "ab12-1" and fields["event"] == "trade"


@given(st.text())
def test_valid_symbols_hold_no_framing_characters(text: str) -> None:
    if is_valid_symbol(text):
        assert not set(text) & set("\r\n:\x00 ")
