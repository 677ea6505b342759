"""Fuzzing the edge's input parsers (issue 6): whatever text a client sends as Last-Event-ID,
symbols or types, the parser returns a valid value or raises its own typed error (a reset, or a
400 problem), never anything else; and what it accepts cannot break SSE framing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge_service.cursor import EARLIEST, Cursor, MalformedCursor, format_event_id, parse_cursor
from edge_service.params import KINDS, parse_symbols, parse_types
from edge_service.problems import Problem

FRAMING = set("\r\n\x00:")


@given(st.text())
def test_any_last_event_id_parses_or_is_malformed(value: str) -> None:
    try:
        cursor = parse_cursor(value)
    except MalformedCursor:
        return
    if cursor != EARLIEST:
        assert isinstance(cursor, Cursor)
        assert cursor.offset >= 0 and not FRAMING & set(cursor.epoch)
        assert parse_cursor(format_event_id(cursor.epoch, cursor.offset)) == cursor


@given(st.lists(st.text(), max_size=5), st.integers(min_value=1, max_value=300))
def test_any_symbols_query_is_a_valid_list_or_a_400(raw: list[str], limit: int) -> None:
    try:
        symbols = parse_symbols(raw, limit)
    except Problem as problem:
        assert problem.status == 400 and "\n" not in problem.detail
        return
    assert 0 < len(symbols) <= limit and len(set(symbols)) == len(symbols)
    for symbol in symbols:
        assert not FRAMING & set(symbol) and symbol == symbol.strip()


@given(st.one_of(st.none(), st.lists(st.text(), max_size=4)))
def test_any_types_query_is_a_subset_or_a_400(raw: list[str] | None) -> None:
    try:
        kinds = parse_types(raw)
    except Problem as problem:
        assert problem.status == 400
        return
    assert kinds and kinds <= set(KINDS)  # trade, quote, book, bar
