"""The Binance connector's pure parts: message mapping, symbols and URL, backoff, repeats."""

from __future__ import annotations

import itertools
import json

import pytest
from tickstream.v1 import tick_pb2

from feed_service.sources.binance import (
    SPOT_SCALE,
    Backoff,
    BinanceSource,
    MessageError,
    normalize_symbols,
    parse_message,
    stream_url,
)
from feed_service.sources.replay import load_recording
from tests.exchange_server import recorded_messages, requested_streams
from tests.support import BTC_FILE

SYMBOLS = frozenset({"BTCUSDT", "ETHUSDT"})
TRADE = {
    "e": "trade",
    "E": 1723161255343,
    "s": "BTCUSDT",
    "t": 3735683259,
    "p": "61837.63000000",
    "q": "0.02000000",
    "T": 1723161255342,
    "m": True,
    "M": True,
}
QUOTE = {
    "u": 50093239212,
    "s": "BTCUSDT",
    "b": "61837.63000000",
    "B": "3.78826000",
    "a": "61837.64000000",
    "A": "1.54698000",
}


def framed(stream: str, data: object) -> str:
    return json.dumps({"stream": stream, "data": data})


def test_trade_maps_exactly_with_trade_id_dedup_and_exchange_time() -> None:
    tick = parse_message(framed("btcusdt@trade", TRADE), SYMBOLS, receive_ns=1)
    assert (tick.symbol, tick.kind, tick.update_id) == ("BTCUSDT", "trade", 3735683259)
    draft = tick.draft
    assert draft.symbol == "BTCUSDT" and draft.dedup_id == "t:3735683259"
    assert (draft.trade.price, draft.trade.size) == ("61837.63000000", "0.02000000")
    assert draft.trade.trade_id == "3735683259"
    assert draft.trade.side == tick_pb2.SIDE_SELL  # "m": true, the buyer was the maker
    assert draft.event_time.ToNanoseconds() == 1723161255342 * 1_000_000
    buy = parse_message(framed("btcusdt@trade", {**TRADE, "m": False}), SYMBOLS, 1)
    assert buy.draft.trade.side == tick_pb2.SIDE_BUY
    unknown = {k: v for k, v in TRADE.items() if k != "m"}
    assert parse_message(framed("btcusdt@trade", unknown), SYMBOLS, 1).draft.trade.side == 0


def test_spot_quote_takes_receive_time_and_perpetual_quote_its_T() -> None:
    spot = parse_message(framed("btcusdt@bookTicker", QUOTE), SYMBOLS, receive_ns=123_456_789)
    assert (spot.kind, spot.update_id, spot.draft.dedup_id) == (
        "quote",
        50093239212,
        "u:50093239212",
    )
    quote = spot.draft.quote
    assert (quote.bid_price, quote.bid_size) == ("61837.63000000", "3.78826000")
    assert (quote.ask_price, quote.ask_size) == ("61837.64000000", "1.54698000")
    assert spot.draft.event_time.ToNanoseconds() == 123_456_789
    timed = parse_message(framed("btcusdt@bookTicker", {**QUOTE, "T": 1723161255000}), SYMBOLS, 5)
    assert timed.draft.event_time.ToNanoseconds() == 1723161255000 * 1_000_000


def test_recorded_messages_map_as_the_replay_maps_them() -> None:
    """The connector and the replay read the same Binance fields the same way: for the first
    3,000 recorded trades and quotes, every draft is equal apart from the connector's dedup id
    (a spot quote's event time is its receive time in both)."""
    replayed, _ = load_recording([BTC_FILE])
    replayed = [r for r in replayed if not isinstance(r.body, tick_pb2.BookUpdate)]
    streamed = [
        m for m in recorded_messages([BTC_FILE], 4_000) if not m.stream.endswith("depth@100ms")
    ][:3_000]
    for recorded, message in zip(replayed, streamed, strict=False):
        draft = parse_message(message.text, SYMBOLS, message.receive_ns).draft
        draft.dedup_id = ""
        assert draft == recorded.draft(), message.text


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        b"\xff\xfe",
        "[1, 2]",
        '{"result": null, "id": 1}',
        framed("btcusdt@depth@100ms", {"u": 1}),
        framed("xrpusdt@trade", TRADE),
        framed("btcusdt@trade", {**TRADE, "t": "3735683259"}),
        framed("btcusdt@trade", {**TRADE, "t": True}),
        framed("btcusdt@trade", {**TRADE, "p": 61837.63}),
        framed("btcusdt@trade", {k: v for k, v in TRADE.items() if k != "T"}),
        framed("btcusdt@bookTicker", {**QUOTE, "u": -1}),
        framed("btcusdt@bookTicker", {k: v for k, v in QUOTE.items() if k != "A"}),
        framed("btcusdt@bookTicker", "data"),
    ],
)
def test_malformed_messages_raise_message_error(raw: str | bytes) -> None:
    with pytest.raises(MessageError):
        parse_message(raw, SYMBOLS, 1)


def test_bad_decimals_and_repeats_are_skipped_not_raised() -> None:
    """A message that parses but would make the Ingestor refuse its whole batch (a price in
    exponent form, a crossed quote) is skipped alone; an id not above the last passed on for
    its symbol and kind (a resend after a reconnect) is dropped."""
    source = BinanceSource(["BTCUSDT"], "ws://127.0.0.1:9")
    source.symbols = frozenset({"BTCUSDT"})
    assert source.accept(framed("btcusdt@trade", {**TRADE, "p": "6e4"}), 1) == []
    crossed = {**QUOTE, "b": "61837.65000000"}
    assert source.accept(framed("btcusdt@bookTicker", crossed), 1) == []
    assert source.malformed == 2
    first = framed("btcusdt@trade", TRADE)
    assert source.accept(first, 1) != []
    assert source.accept(first, 1) == []
    older = framed("btcusdt@trade", {**TRADE, "t": TRADE["t"] - 1})  # type: ignore[operator]
    assert source.accept(older, 1) == []
    assert source.accept(framed("btcusdt@bookTicker", QUOTE), 1) != [], "own id space"
    newer = framed("btcusdt@trade", {**TRADE, "t": TRADE["t"] + 1})  # type: ignore[operator]
    assert source.accept(newer, 1) != []
    assert (source.repeats, source.malformed) == (2, 2)


def test_symbols_are_upper_cased_deduplicated_and_checked() -> None:
    assert normalize_symbols(["btcusdt", "ETHUSDT", "BTCUSDT "]) == ["BTCUSDT", "ETHUSDT"]
    for bad in (["BTC-USDT"], ["BTC USDT"], [""], [], ["X" * 33], ["é"]):
        with pytest.raises(ValueError):
            normalize_symbols(bad)
    with pytest.raises(ValueError, match="at most 512"):
        normalize_symbols([f"S{n}" for n in range(513)])
    with pytest.raises(ValueError, match="at most 341"):
        normalize_symbols([f"S{n}" for n in range(342)], ("trade", "bookTicker", "depth@100ms"))


def test_stream_url_subscribes_trade_and_book_ticker_in_lower_case() -> None:
    url = stream_url("wss://example.invalid:9443/", ["BTCUSDT", "ETHUSDT"])
    assert url == (
        "wss://example.invalid:9443/stream?streams="
        "btcusdt@trade/btcusdt@bookTicker/ethusdt@trade/ethusdt@bookTicker"
    )
    assert requested_streams(url.removeprefix("wss://example.invalid:9443")) == {
        "btcusdt@trade",
        "btcusdt@bookTicker",
        "ethusdt@trade",
        "ethusdt@bookTicker",
    }
    for bad in ("http://127.0.0.1:1", "127.0.0.1:1", "ws://"):
        with pytest.raises(ValueError):
            stream_url(bad, ["BTCUSDT"])


async def test_load_declares_spot_scales_like_the_replay() -> None:
    infos = await BinanceSource(["ethusdt", "BTCUSDT"], "ws://127.0.0.1:9").load()
    assert [(i.symbol, i.price_scale, i.size_scale, i.source) for i in infos] == [
        ("BTCUSDT", SPOT_SCALE, SPOT_SCALE, "binance:binance-spot"),
        ("ETHUSDT", SPOT_SCALE, SPOT_SCALE, "binance:binance-spot"),
    ]
    _, replayed = load_recording([BTC_FILE])
    assert (replayed[0].price_scale, replayed[0].size_scale) == (SPOT_SCALE, SPOT_SCALE)


def test_backoff_doubles_to_the_cap_with_equal_jitter_and_resets() -> None:
    low = Backoff(0.5, 30.0, rng=lambda: 0.0)
    high = Backoff(0.5, 30.0, rng=lambda: 0.999999)
    lows = [low.next_delay() for _ in range(10)]
    highs = [high.next_delay() for _ in range(10)]
    ceilings = [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30]
    assert lows == [c / 2 for c in ceilings]
    assert highs == pytest.approx(ceilings, rel=1e-5)
    low.reset()
    assert low.next_delay() == 0.25
    real = Backoff()
    delays = [real.next_delay() for _ in range(200)]
    assert all(0.25 <= d <= 30 for d in delays)
    assert len(set(itertools.islice(delays, 10, None))) > 1, "jittered, not in step"


def test_odd_values_are_skipped_like_any_malformed_message() -> None:
    """Values JSON allows but a tick cannot hold (a time past protobuf's range, an id past 64
    bits, an unpaired surrogate, nesting deeper than the parser goes) are skipped and
    counted: they never end the source."""
    source = BinanceSource(["BTCUSDT"], "ws://127.0.0.1:9")
    source.symbols = frozenset({"BTCUSDT"})
    odd = [
        framed("btcusdt@trade", {**TRADE, "T": 99_999_999_999_999_999}),
        framed("btcusdt@trade", {**TRADE, "t": 2**64}),
        framed("btcusdt@trade", {**TRADE, "p": "\ud800"}),
        framed("btcusdt@bookTicker", {**QUOTE, "u": 2**70}),
        "[" * 100_000 + "]" * 100_000,
    ]
    for raw in odd:
        assert source.accept(raw, 1) == [], raw[:80]
    assert source.malformed == len(odd)
    assert source.accept(framed("btcusdt@trade", TRADE), 1) != []
