"""Parsing and validation of the SSE routes' parameters; failures are :class:`Problem` (400)."""

from __future__ import annotations

from collections.abc import Iterable

from tickstream_common.symbols import SYMBOL_RULE, is_valid_symbol

from .books import DEFAULT_DEPTH, MAX_DEPTH
from .problems import Problem
from .rate import MAX_RATE, MIN_RATE

KINDS = ("trade", "quote", "book", "bar")
DEFAULT_KINDS = frozenset(("trade", "quote"))
STREAM_PARAMETERS = frozenset(
    ("symbols", "types", "snapshot", "depth", "intervals", "max_rate", "last_event_id", "token")
)
"""The query parameters the SSE routes know (``symbols`` only on ``/sse``)."""


def check_known(names: Iterable[str], known: Iterable[str]) -> None:
    """Raises Problem 400 naming the first of ``names`` not in ``known``, so a misspelt option
    never looks like a working one."""
    allowed = set(known)
    for name in names:
        if name not in allowed:
            shown = name if len(name) <= 40 and name.isprintable() else name[:40] + "..."
            raise Problem(
                400,
                "unknown-parameter",
                "Unknown query parameter",
                f"unknown query parameter {shown!r}; this route takes "
                f"{', '.join(sorted(allowed)) or 'none'}",
                parameter=shown,
            )


def parse_intervals(raw: list[str] | None, offered: list[str]) -> list[str]:
    """``intervals=1s,1m`` values (repeated parameters add up; absent: every one ``offered``,
    the feed's bar intervals). Raises Problem 400 naming an interval the feed does not make."""
    if raw is None:
        return list(offered)
    intervals = list(dict.fromkeys(part for value in raw for part in value.split(",")))
    unknown = [interval for interval in intervals if interval not in offered]
    if unknown or not intervals:
        shown = unknown[0][:20] if unknown else ""
        raise Problem(
            400,
            "invalid-intervals",
            "Invalid intervals",
            f"bar interval {shown!r} is not made by the feed; it makes "
            f"{', '.join(offered) or 'no bars'}",
        )
    return intervals


def parse_rate(raw: str | None) -> float | None:
    """``max_rate=R``: updates per second per symbol and type, MIN_RATE to MAX_RATE (absent:
    None, no cap). Raises Problem 400 for anything else."""
    if raw is None:
        return None
    try:
        rate = float(raw)
    except ValueError:
        rate = 0.0
    if not MIN_RATE <= rate <= MAX_RATE:  # NaN fails too
        raise Problem(
            400,
            "invalid-max-rate",
            "Invalid max_rate",
            f"max_rate is updates per second per symbol and type, {MIN_RATE:g} to {MAX_RATE:g}",
        )
    return rate


def parse_depth(raw: str | None) -> int:
    """``depth=N``: book levels a side, 1 to MAX_DEPTH (absent: DEFAULT_DEPTH). Raises Problem
    400 for anything else."""
    if raw is None:
        return DEFAULT_DEPTH
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_DEPTH):
        raise Problem(
            400,
            "invalid-depth",
            "Invalid depth",
            f"depth is a whole number of book levels a side, 1 to {MAX_DEPTH}",
        )
    return int(raw)


def check_one_symbol(symbol: str) -> None:
    """``/sse/{symbol}`` names one symbol: Problem 400 for a comma list in the path."""
    if "," in symbol:
        raise Problem(
            400,
            "invalid-symbols",
            "Invalid symbols",
            "/sse/{symbol} takes one symbol; several: /sse?symbols=A,B",
        )


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
    """``types=trade,quote,book,bar`` values, repeated parameters adding up (absent: trade and
    quote). Raises Problem 400 for an empty or unknown type."""
    if raw is None:
        return DEFAULT_KINDS
    kinds = {part for value in raw for part in value.split(",")}
    if not kinds or kinds - set(KINDS):
        raise Problem(
            400,
            "invalid-types",
            "Invalid types",
            "types is a comma-separated subset of trade,quote,book,bar",
        )
    return frozenset(kinds)
