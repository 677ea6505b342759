"""Where ticks live in the JetStream backbone: one subject per (symbol, tick type).

A tick of ``BTCUSDT`` in the stream ``TICKS`` is stored on ``ticks.BTCUSDT.trade`` or
``ticks.BTCUSDT.quote``. A symbol may hold ``.``, which separates subject tokens, so it is
written as ``=`` (not a symbol character, valid in subjects and key-value keys): ``BRK.B`` is
``ticks.BRK=B.trade``, and a symbol's metadata is the key ``BRK=B`` of the symbols bucket.
"""

from __future__ import annotations

from tickstream.v1 import tick_pb2

KIND_TOKENS = {
    tick_pb2.TICK_TYPE_TRADE: "trade",
    tick_pb2.TICK_TYPE_QUOTE: "quote",
    tick_pb2.TICK_TYPE_BOOK: "book",
    tick_pb2.TICK_TYPE_BAR: "bar",
}
TOKEN_KINDS = {token: kind for kind, token in KIND_TOKENS.items()}


def symbol_token(symbol: str) -> str:
    """``symbol`` as one subject token or key-value key (``.`` written as ``=``)."""
    return symbol.replace(".", "=")


def token_symbol(token: str) -> str:
    """The symbol a :func:`symbol_token` came from."""
    return token.replace("=", ".")


class TickSubjects:
    """The subjects of one stream: ``<stream in lower case>.<symbol token>.<type>``."""

    def __init__(self, stream: str) -> None:
        self.prefix = f"{stream.lower()}."
        self.wildcard = f"{self.prefix}>"
        self._parsed: dict[str, tuple[str, int]] = {}

    def subject(self, symbol: str, tick_type: int) -> str:
        """The subject of ``symbol``'s ticks of ``tick_type`` (KeyError for another type)."""
        return f"{self.prefix}{symbol_token(symbol)}.{KIND_TOKENS[tick_type]}"

    def parse(self, subject: str) -> tuple[str, int]:
        """(symbol, tick type) of a subject of this stream; ValueError for any other subject.

        Called for every tick a replica reads, so answers are kept (one per subject seen).
        """
        parsed = self._parsed.get(subject)
        if parsed is not None:
            return parsed
        if not subject.startswith(self.prefix):
            raise ValueError(f"{subject!r} is not under {self.prefix!r}")
        token, _, kind = subject[len(self.prefix) :].rpartition(".")
        if not token or kind not in TOKEN_KINDS:
            raise ValueError(f"{subject!r} is not <prefix>.<symbol>.<trade|quote|book|bar>")
        parsed = self._parsed[subject] = (token_symbol(token), TOKEN_KINDS[kind])
        return parsed
