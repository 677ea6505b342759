"""The max_rate gate (edge_service.rate): releases at most R a second, newest kept, trades all."""

from __future__ import annotations

import asyncio

from edge_service.encoding import EncodedTick
from edge_service.rate import RateGate


def tick(offset: int, kind: str, symbol: str = "A") -> EncodedTick:
    return EncodedTick(offset, symbol, kind, f"{offset}".encode(), 0)


async def test_releases_are_spaced_and_keep_the_newest_and_every_trade() -> None:
    loop = asyncio.get_running_loop()
    releases: list[tuple[float, list[int]]] = []
    gate = RateGate(
        10.0,
        lambda ticks: releases.append((loop.time(), [t.offset for t in ticks])),
        limit=100,
        overflow=lambda: None,
    )
    gate.push(tick(1, "quote"))
    gate.push(tick(2, "trade"))
    gate.push(tick(3, "quote"))
    gate.push(tick(4, "quote", "B"))
    gate.push(tick(5, "book:10"))
    gate.push(tick(6, "book:10"))
    gate.push(tick(7, "trade"))
    await asyncio.sleep(0.01)
    assert [offsets for _, offsets in releases] == [[2, 3, 4, 6, 7]]  # offset order
    gate.push(tick(8, "quote"))
    gate.push(tick(9, "quote"))
    await asyncio.sleep(0.05)
    assert len(releases) == 1, "the next release waits a tenth of a second"
    await asyncio.sleep(0.1)
    assert releases[1][1] == [9]
    assert releases[1][0] - releases[0][0] >= 0.1 - 1e-3
    gate.push(tick(10, "trade"))
    gate.close()
    await asyncio.sleep(0.15)
    assert len(releases) == 2, "nothing after close"


async def test_holding_more_trades_than_the_limit_ends_the_stream() -> None:
    ended: list[bool] = []
    released: list[list[EncodedTick]] = []
    gate = RateGate(0.1, released.append, limit=3, overflow=lambda: ended.append(True))
    for offset in range(1, 5):
        gate.push(tick(offset, "trade"))
    assert ended == [True], "the fourth trade is over the limit"
    gate.push(tick(5, "trade"))
    await asyncio.sleep(0.01)
    assert ended == [True] and released == [], "nothing held or released after that"


async def test_release_now_hands_over_what_is_held_and_cancels_the_timer() -> None:
    released: list[list[int]] = []
    gate = RateGate(
        1.0, lambda ts: released.append([t.offset for t in ts]), limit=10, overflow=list
    )
    gate.push(tick(1, "trade"))
    await asyncio.sleep(0.01)  # the first release goes at once; the next waits a second
    gate.push(tick(2, "quote"))
    gate.push(tick(3, "trade"))
    gate.release_now()  # a reset is next: what is held goes before it
    assert released == [[1], [2, 3]]
    gate.release_now()
    assert released == [[1], [2, 3]], "nothing held, nothing released"
