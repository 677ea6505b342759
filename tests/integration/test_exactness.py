"""Acceptance 2: real recorded trades reach an SSE client value-exact and numbered right, on
either backbone (issue 12)."""

from __future__ import annotations

import gzip
import itertools
import json
from datetime import UTC, datetime
from decimal import Decimal

import httpx

from tests.conftest import Stack
from tests.support import BTC_FILE, collect

TRADES = 2_000


def recorded_trades(count: int) -> list[dict[str, object]]:
    """The first ``count`` BTCUSDT trades of the file, read independently of the feed."""
    trades = []
    with gzip.open(BTC_FILE, "rt") as lines:
        for line in lines:
            message = json.loads(line.partition(" ")[2])
            if message.get("stream", "").endswith("@trade"):
                trades.append(message["data"])
                if len(trades) == count:
                    break
    return trades


def event_time_ms(text: str) -> int:
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None
    return round(moment.astimezone(UTC).timestamp() * 1000)


async def test_first_2000_btcusdt_trades_match_the_file(
    backbone_replay_stack: Stack, http: httpx.AsyncClient
) -> None:
    events = await collect(
        http,
        f"{backbone_replay_stack.base_url}/sse/BTCUSDT?last_event_id=earliest",
        count=TRADES,
        kinds=("trade",),
    )
    ticks = [json.loads(e.data) for e in events if e.event in ("trade", "quote")]
    offsets = [int(t["offset"]) for t in ticks]
    assert all(a < b for a, b in itertools.pairwise(offsets)), "offsets must increase"
    assert [e.offset for e in events if e.id] == offsets, "SSE ids carry the offsets"

    trades = [t for t in ticks if "trade" in t]
    assert len(trades) == TRADES
    assert [int(t["sequence"]) for t in trades] == list(range(1, TRADES + 1))
    for got, want in zip(trades, recorded_trades(TRADES), strict=True):
        trade = got["trade"]
        assert got["symbol"] == "BTCUSDT"
        assert trade["tradeId"] == str(want["t"])
        assert trade["price"] == want["p"], "price string reaches the client unchanged"
        assert trade["size"] == want["q"], "quantity string reaches the client unchanged"
        assert Decimal(trade["price"]) == Decimal(str(want["p"]))
        assert trade["side"] == ("SIDE_SELL" if want["m"] else "SIDE_BUY")
        assert event_time_ms(got["eventTime"]) == want["T"], "event time is the exchange time"
