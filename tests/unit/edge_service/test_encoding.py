"""The hand-written tick encoder gives exactly the library's bytes (json_format.MessageToDict,
json.dumps, sse-starlette's ServerSentEvent): property-based over arbitrary ticks, and on the
bundled recording as the feed numbers and stamps it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import FrozenInstanceError
from pathlib import Path
from unittest import mock

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from sse_starlette import ServerSentEvent
from tickstream.v1 import tick_pb2

from edge_service import encoding
from edge_service.cursor import format_event_id
from edge_service.encoding import EncodedTick, encode_tick, encode_tick_reference
from feed_service.hub import TickHub
from feed_service.sources.replay import load_recording
from tests.support import BTC_FILE, ETH_FILE

TIMESTAMP_MIN_S = -62_135_596_800  # 0001-01-01T00:00:00Z
TIMESTAMP_MAX_S = 253_402_300_799  # 9999-12-31T23:59:59Z
EPOCH = "2a4df7dd760a4637"
Encoder = Callable[[tick_pb2.Tick, str], EncodedTick]


def library_encode_tick(tick: tick_pb2.Tick, epoch: str) -> EncodedTick:
    """The encoder as it was before the fast path (commit 41682c8), kept here as the spec."""
    kind = "trade" if tick.HasField("trade") else "quote"
    data = json.dumps(json_format.MessageToDict(tick), separators=(",", ":"), ensure_ascii=True)
    frame = ServerSentEvent(
        data=data, event=kind, id=format_event_id(epoch, tick.offset), sep="\n"
    ).encode()
    return EncodedTick(tick.offset, tick.symbol, kind, frame, tick.ingest_time.ToNanoseconds())


def outcome(encode: Encoder, tick: tick_pb2.Tick, epoch: str) -> EncodedTick | tuple[type, str]:
    """The encoded tick, or the type and message of what the encoder raised."""
    try:
        result = encode(tick, epoch)
    except Exception as error:  # the exception is the outcome compared
        return type(error), str(error)
    assert isinstance(result, EncodedTick)
    return result


# ----- arbitrary ticks -------------------------------------------------------------------------

texts = st.one_of(
    st.just(""),
    st.text(),  # any code point but surrogates: controls, quotes, backslashes, non-ASCII
    st.text(alphabet='"\\\x00\x1f\x7f\n\r\u2028\u00e9\U0001f600 /<>', max_size=8),
    st.from_regex(r"[0-9]{1,12}\.[0-9]{1,8}", fullmatch=True),
    st.sampled_from(["BTCUSDT", "ETHUSDT-PERP", "3735683259"]),
)
uint64s = st.one_of(st.just(0), st.integers(1, 2**64 - 1), st.integers(1, 1000))
seconds = st.one_of(
    st.sampled_from([0, -1, 1, TIMESTAMP_MIN_S, TIMESTAMP_MAX_S, 1_723_161_255]),
    st.integers(TIMESTAMP_MIN_S, TIMESTAMP_MAX_S),
    st.integers(-(2**63), 2**63 - 1),  # mostly out of range: both must raise alike
)
nanos = st.one_of(
    st.just(0),
    st.integers(0, 999).map(lambda ms: ms * 1_000_000),
    st.integers(0, 999_999).map(lambda us: us * 1_000),
    st.integers(0, 999_999_999),
    st.sampled_from([1, 999_999_999, 1_000_000_000, -1, 2**31 - 1, -(2**31)]),
)
stamps = st.one_of(st.none(), st.tuples(seconds, nanos))
sides = st.one_of(st.sampled_from([0, 1, 2]), st.integers(-(2**31), 2**31 - 1))


@st.composite
def ticks(draw: st.DrawFn) -> tick_pb2.Tick:
    """Any Tick: each field set or at its default, Timestamps unset, at the epoch or anywhere
    (valid or not), a trade, a quote or no body, any Side number."""
    tick = tick_pb2.Tick(symbol=draw(texts), sequence=draw(uint64s), offset=draw(uint64s))
    for name in ("event_time", "ingest_time"):
        stamp = draw(stamps)
        if stamp is not None:
            getattr(tick, name).seconds, getattr(tick, name).nanos = stamp
    body = draw(st.sampled_from(["trade", "quote", None]))
    if body == "trade":
        tick.trade.SetInParent()
        tick.trade.price, tick.trade.size, tick.trade.trade_id = (
            draw(texts),
            draw(texts),
            draw(texts),
        )
        tick.trade.side = draw(sides)  # type: ignore[assignment]
    elif body == "quote":
        tick.quote.SetInParent()
        quote = tick.quote
        quote.bid_price, quote.bid_size = draw(texts), draw(texts)
        quote.ask_price, quote.ask_size = draw(texts), draw(texts)
    return tick


filled_texts = st.one_of(
    st.text(min_size=1),
    st.text(alphabet='"\\\x00\x1f\x7f\n\r\u2028\u00e9\U0001f600 /<>', min_size=1, max_size=8),
    st.from_regex(r"[0-9]{1,12}\.[0-9]{1,8}", fullmatch=True),
)
valid_nanos = st.one_of(
    st.just(0),
    st.integers(0, 999).map(lambda ms: ms * 1_000_000),
    st.integers(0, 999_999).map(lambda us: us * 1_000),
    st.integers(0, 999_999_999),
)


@st.composite
def full_ticks(draw: st.DrawFn) -> tick_pb2.Tick:
    """Ticks with every field set and valid Timestamps: the fast path's own shape."""
    tick = tick_pb2.Tick(
        symbol=draw(filled_texts),
        sequence=draw(st.integers(1, 2**64 - 1)),
        offset=draw(st.integers(1, 2**64 - 1)),
    )
    for stamp in (tick.event_time, tick.ingest_time):
        stamp.seconds = draw(st.integers(TIMESTAMP_MIN_S, TIMESTAMP_MAX_S))
        stamp.nanos = draw(valid_nanos)
    if draw(st.booleans()):
        tick.trade.price, tick.trade.size = draw(filled_texts), draw(filled_texts)
        tick.trade.trade_id = draw(filled_texts)
        tick.trade.side = draw(st.sampled_from([tick_pb2.SIDE_BUY, tick_pb2.SIDE_SELL]))
    else:
        quote = tick.quote
        quote.bid_price, quote.bid_size = draw(filled_texts), draw(filled_texts)
        quote.ask_price, quote.ask_size = draw(filled_texts), draw(filled_texts)
    return tick


epochs = st.one_of(st.just(EPOCH), st.from_regex(r"[0-9a-f]{1,64}", fullmatch=True), st.text())


@settings(max_examples=1000)
@given(ticks(), epochs)
def test_any_tick_encodes_to_the_library_bytes(tick: tick_pb2.Tick, epoch: str) -> None:
    assert outcome(encode_tick, tick, epoch) == outcome(library_encode_tick, tick, epoch)


@settings(max_examples=500)
@given(full_ticks(), epochs)
def test_full_ticks_encode_to_the_library_bytes(tick: tick_pb2.Tick, epoch: str) -> None:
    """The shape the feed sends takes the fast path itself (no sparse path, no library),
    unless a Timestamp is exactly the epoch."""
    at_epoch = not all(s.seconds or s.nanos for s in (tick.event_time, tick.ingest_time))
    refuse = mock.Mock(side_effect=AssertionError("left the fast path"))
    with (
        mock.patch.object(encoding, "encode_tick_reference", refuse),
        mock.patch.object(
            encoding, "_encode_sparse", encoding._encode_sparse if at_epoch else refuse
        ),
    ):
        encoded = encode_tick(tick, epoch)
    assert encoded == library_encode_tick(tick, epoch)


def test_reference_is_the_library_encoder() -> None:
    tick = tick_pb2.Tick(symbol="A\u00e9\n", sequence=2, offset=3)
    tick.ingest_time.FromNanoseconds(1_723_161_255_024_619_568)
    tick.trade.price = '1"\\'
    assert encode_tick_reference(tick, "ab\r\n") == library_encode_tick(tick, "ab\r\n")


def test_edge_cases_of_presence_and_time() -> None:
    """Set at the epoch (present, all zero), the range's ends, each fraction length."""
    cases = []
    for seconds_, nanos_ in [
        (0, 0),
        (TIMESTAMP_MIN_S, 0),
        (TIMESTAMP_MAX_S, 999_999_999),
        (-1, 1_000_000),
        (1, 1_000),
        (1_723_161_255, 1),
        (TIMESTAMP_MAX_S + 1, 0),
        (0, -1),
    ]:
        tick = tick_pb2.Tick(symbol="BTCUSDT", sequence=1, offset=1)
        tick.quote.SetInParent()
        tick.event_time.seconds, tick.event_time.nanos = seconds_, nanos_
        tick.ingest_time.seconds, tick.ingest_time.nanos = seconds_, nanos_
        cases.append(tick)
        bare = tick_pb2.Tick()
        bare.ingest_time.seconds, bare.ingest_time.nanos = seconds_, nanos_
        cases.append(bare)
    for tick in cases:
        assert outcome(encode_tick, tick, EPOCH) == outcome(library_encode_tick, tick, EPOCH)


def test_second_cache_stays_exact_when_it_overflows() -> None:
    tick = tick_pb2.Tick(symbol="BTCUSDT", sequence=1, offset=1)
    tick.trade.price, tick.trade.size, tick.trade.trade_id = "1.0", "2", "3"
    tick.trade.side = tick_pb2.SIDE_BUY
    for step in range(2 * encoding._CACHED + 10):
        tick.event_time.seconds = 1_000_000_000 + step * 3_601
        tick.ingest_time.seconds, tick.ingest_time.nanos = 1_700_000_000 + step, step
        assert encode_tick(tick, EPOCH) == library_encode_tick(tick, EPOCH)
    assert len(encoding._second_texts) <= encoding._CACHED
    assert len(encoding._ingest_texts) <= encoding._CACHED


def test_encoded_tick_stays_frozen() -> None:
    tick = tick_pb2.Tick(symbol="BTCUSDT", sequence=1, offset=9)
    tick.quote.bid_price = "1"
    with pytest.raises(FrozenInstanceError):
        encode_tick(tick, EPOCH).offset = 10  # type: ignore[misc]


# ----- the recording ---------------------------------------------------------------------------

RECORDED_PER_FILE = 3_000


def recorded_ticks() -> list[tick_pb2.Tick]:
    """The first ticks of each bundled file as the feed's hub numbers and stamps them (batches
    of 100, one ingest time each)."""
    ticks: list[tick_pb2.Tick] = []
    for path in (Path(BTC_FILE), Path(ETH_FILE)):
        recorded, infos = load_recording([path])
        hub = TickHub(RECORDED_PER_FILE)
        hub.add_symbols(infos)
        recorded = [r for r in recorded if r.body.DESCRIPTOR.name != "BookUpdate"]
        recorded = recorded[:RECORDED_PER_FILE]  # books: encoded per depth (test_books)
        for start in range(0, len(recorded), 100):
            hub.publish([r.draft() for r in recorded[start : start + 100]])
        ticks.extend(stored.tick for stored in hub.history.after(0, RECORDED_PER_FILE))
    return ticks


def test_every_recorded_tick_encodes_to_the_library_bytes_without_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The feed's ticks take the fast path (never the library fallback) and match byte for byte."""
    ticks = recorded_ticks()
    assert {t.WhichOneof("body") for t in ticks} == {"trade", "quote"}
    expected = [library_encode_tick(tick, EPOCH) for tick in ticks]

    def no_fallback(tick: tick_pb2.Tick, epoch: str) -> EncodedTick:
        raise AssertionError(f"fell back to the library for {tick}")

    monkeypatch.setattr(encoding, "encode_tick_reference", no_fallback)
    assert [encode_tick(tick, EPOCH) for tick in ticks] == expected
