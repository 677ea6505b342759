"""The symbol naming rule: one definition for the feed (sources, ingest, servicer) and the edge
(query parameters)."""

from __future__ import annotations

import re

SYMBOL_PATTERN = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,31}")
"""Valid symbols: 1 to 32 characters, upper-case letters, digits, ``.``, ``_``, ``-``; the first
a letter or digit. Nothing else can reach an SSE event or a log line."""

SYMBOL_RULE = "1-32 characters of A-Z 0-9 . _ - (upper case)"
""":data:`SYMBOL_PATTERN` in words, for error messages."""


def is_valid_symbol(symbol: str) -> bool:
    """True when ``symbol`` matches :data:`SYMBOL_PATTERN` in full."""
    return SYMBOL_PATTERN.fullmatch(symbol) is not None
