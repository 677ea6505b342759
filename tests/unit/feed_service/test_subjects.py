"""feed_service.subjects: one subject per (symbol, tick type), reversible for every symbol."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tickstream.v1 import tick_pb2

from feed_service.subjects import TickSubjects, symbol_token
from tickstream_common.symbols import SYMBOL_PATTERN

TRADE, QUOTE = tick_pb2.TICK_TYPE_TRADE, tick_pb2.TICK_TYPE_QUOTE


def test_subjects_name_the_stream_symbol_and_type() -> None:
    subjects = TickSubjects("TICKS")
    assert subjects.wildcard == "ticks.>"
    assert subjects.subject("BTCUSDT", TRADE) == "ticks.BTCUSDT.trade"
    assert subjects.subject("BRK.B", QUOTE) == "ticks.BRK=B.quote"
    assert symbol_token("A..B.") == "A==B="


@given(st.from_regex(SYMBOL_PATTERN, fullmatch=True), st.sampled_from([TRADE, QUOTE]))
def test_every_symbol_survives_the_round_trip(symbol: str, kind: int) -> None:
    subjects = TickSubjects("TICKS")
    subject = subjects.subject(symbol, kind)
    assert all(subject.split("."))  # no empty token: a valid NATS subject
    assert subjects.parse(subject) == (symbol, kind)


@pytest.mark.parametrize("subject", ["other.X.trade", "ticks.X.candle", "ticks..trade", "ticks.X"])
def test_a_subject_of_no_tick_is_refused(subject: str) -> None:
    with pytest.raises(ValueError):
        TickSubjects("TICKS").parse(subject)
