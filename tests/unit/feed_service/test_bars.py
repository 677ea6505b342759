"""Bars from trades (feed_service.bars): alignment, exact sums, final once, the update cap."""

from __future__ import annotations

from decimal import Decimal

import pytest
from tickstream.v1 import ingest_pb2, tick_pb2

from feed_service.bars import BarMaker, interval_ns
from feed_service.ingest import make_draft

S = 1_000_000_000
NOW = 1_000_000 * S  # the feed's clock: after every trade below


def trade(at_s: float, price: str, size: str = "1") -> ingest_pb2.TickDraft:
    return make_draft("A", int(at_s * S), tick_pb2.Trade(price=price, size=size, trade_id="1"))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def bars_of(drafts: list[ingest_pb2.TickDraft]) -> list[tuple[str, int, bool, str, int]]:
    return [
        (d.bar.interval, d.bar.start.seconds, d.bar.final, d.bar.close, d.bar.trades)
        for d in drafts
    ]


def test_intervals() -> None:
    assert (
        interval_ns("1s") == S and interval_ns("5m") == 300 * S and interval_ns("1d") == 86400 * S
    )
    for bad in ("0s", "1", "1w", "s", "10000s", "1.5m"):
        with pytest.raises(ValueError, match="bar interval"):
            interval_ns(bad)


def test_bars_open_fill_and_close_exactly_once() -> None:
    clock = Clock()
    maker = BarMaker(["1s", "1m"], clock)
    out, commit = maker.on_trades(
        [trade(60.1, "10.50", "0.1"), trade(60.5, "11.25", "0.2"), trade(60.9, "9.75", "0.3")], NOW
    )
    commit()
    # first trade of each bar: an open update; later ones wait for the cap
    assert bars_of(out) == [("1s", 60, False, "10.50", 1), ("1m", 60, False, "10.50", 1)]
    clock.now += 0.2
    out, commit = maker.on_trades([trade(61.2, "12", "1")], NOW)
    commit()
    final = out[0].bar
    assert (final.interval, final.start.seconds, final.final) == ("1s", 60, True)
    assert (final.open, final.high, final.low, final.close) == ("10.50", "11.25", "9.75", "9.75")
    assert final.volume == "0.6" and final.trades == 3
    assert Decimal(final.quote_volume) == Decimal("1.05") + Decimal("2.25") + Decimal("2.925")
    assert out[0].event_time.seconds == 61, "a final bar's event time is its end"
    assert bars_of(out[1:]) == [("1s", 61, False, "12", 1)]  # the 1m bar waits for the cap
    clock.now += 1.0
    due, commit = maker.due()
    commit()
    assert bars_of(due) == [("1m", 60, False, "12", 4)], "the last change, a second later"
    assert maker.due()[0] == [], "nothing changed since"


def test_a_refused_batch_changes_nothing() -> None:
    maker = BarMaker(["1s"], Clock())
    maker.on_trades([trade(1.0, "1")], NOW)[1]()
    refused, _ = maker.on_trades([trade(2.0, "2"), trade(2.5, "3")], NOW)  # never committed
    assert refused
    again, _ = maker.on_trades([trade(2.0, "2")], NOW)
    assert bars_of(again)[0] == ("1s", 1, True, "1", 1)
    assert bars_of(again)[1:] == [("1s", 2, False, "2", 1)]


def test_a_late_trade_counts_in_the_open_bar_and_no_bars_without_intervals() -> None:
    maker = BarMaker(["1s"], Clock())
    maker.on_trades([trade(5.5, "1")], NOW)[1]()
    out, commit = maker.on_trades([trade(4.0, "2")], NOW)  # its clock went back
    commit()
    assert out == [] and maker.due()[0] == []  # within the cap, no final reopened
    assert BarMaker([], Clock()).on_trades([trade(1.0, "1")], NOW)[0] == []


def test_a_far_future_trade_counts_at_the_clock_plus_a_minute() -> None:
    maker = BarMaker(["1s"], Clock())
    maker.on_trades([trade(10.0, "1")], 20 * S)[1]()
    out, commit = maker.on_trades([trade(4_000_000_000.0, "2")], 20 * S)  # year 2096
    commit()
    assert bars_of(out)[0] == ("1s", 10, True, "1", 1)
    assert bars_of(out)[1] == ("1s", 80, False, "2", 1), "at the clock (20 s) plus 60 s"
