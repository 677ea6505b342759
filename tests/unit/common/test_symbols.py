"""The one symbol rule of both services (and the copy the standalone client keeps)."""

from __future__ import annotations

import pytest
from tickstream_client import drafts

from tickstream_common.symbols import SYMBOL_PATTERN, is_valid_symbol


@pytest.mark.parametrize("symbol", ["A", "BTCUSDT", "BRK.B", "ES_F", "BTCUSDT-PERP", "9" * 32])
def test_valid_symbols(symbol: str) -> None:
    assert is_valid_symbol(symbol)


@pytest.mark.parametrize(
    "symbol", ["", "btcusdt", ".A", "-A", "A B", "A:B", "A\n", "Ä", "9" * 33, "A,B"]
)
def test_invalid_symbols(symbol: str) -> None:
    assert not is_valid_symbol(symbol)


def test_the_client_library_checks_the_same_rule() -> None:
    """tickstream_client installs without the services, so it keeps a copy: pinned here."""
    assert drafts.SYMBOL_PATTERN.pattern == SYMBOL_PATTERN.pattern
