"""The symbol naming rule shared by sources and the servicer."""

from __future__ import annotations

import re

SYMBOL_PATTERN = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,31}")
"""Valid symbols: 1 to 32 characters, upper-case letters, digits, ``.``, ``_``, ``-``; the first
a letter or digit. Nothing else can reach an SSE event or a log line."""


def is_valid_symbol(symbol: str) -> bool:
    """True when ``symbol`` matches :data:`SYMBOL_PATTERN` in full."""
    return SYMBOL_PATTERN.fullmatch(symbol) is not None
