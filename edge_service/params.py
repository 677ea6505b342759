"""Parsing and validation of the SSE routes' parameters; failures are :class:`Problem` (400)."""

from __future__ import annotations

from tickstream_common.symbols import SYMBOL_RULE, is_valid_symbol

from .problems import Problem

KINDS = ("trade", "quote")


def parse_symbols(raw: list[str], limit: int) -> list[str]:
    """Symbols from the path or ``symbols=A,B`` values (repeated parameters add up): split on
    commas, duplicates counted once, order kept, nothing trimmed.

    Raises Problem 400 when empty, malformed (the detail shows the rule and at most 40
    characters of the input) or more than ``limit``."""
    symbols = list(dict.fromkeys(part for value in raw for part in value.split(",")))
    if not symbols or symbols == [""]:
        raise Problem(400, "invalid-symbols", "Invalid symbols", "name at least one symbol")
    bad = [s for s in symbols if not is_valid_symbol(s)]
    if bad:
        shown = bad[0] if len(bad[0]) <= 40 else bad[0][:40] + "..."
        shown = shown if shown.isprintable() else "(unprintable)"
        raise Problem(
            400,
            "invalid-symbols",
            "Invalid symbols",
            f"malformed symbol {shown!r}: symbols are {SYMBOL_RULE}, comma-separated",
        )
    if len(symbols) > limit:
        raise Problem(
            400,
            "too-many-symbols",
            "Too many symbols",
            f"{len(symbols)} symbols requested; at most {limit} per stream",
        )
    return symbols


def parse_types(raw: list[str] | None) -> frozenset[str]:
    """``types=trade,quote`` values, repeated parameters adding up (absent: both). Raises
    Problem 400 for an empty or unknown type."""
    if raw is None:
        return frozenset(KINDS)
    kinds = {part for value in raw for part in value.split(",")}
    if not kinds or kinds - set(KINDS):
        raise Problem(
            400,
            "invalid-types",
            "Invalid types",
            "types is a comma-separated subset of trade,quote",
        )
    return frozenset(kinds)
