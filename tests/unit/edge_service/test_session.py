"""ClientSession on one source: pass-through, snapshots, slow consumers, resets."""

from __future__ import annotations

import json

from edge_service.encoding import EncodedTick
from edge_service.upstream import TickDispatch
from tests.unit.edge_service.fakes import (
    FakeUpstream,
    offsets_sent,
    session,
    tick,
    trades,
    written,
)


def live(upstream: FakeUpstream, symbols: list[str], queue_limit: int = 1_000):  # type: ignore[no-untyped-def]
    client = session(symbols, queue_limit)
    upstream.listeners.add(client)
    client.begin_live(upstream, snapshot=False)  # type: ignore[arg-type]
    return client


def test_single_symbol_passes_ticks_straight_through_and_skips_old_ones() -> None:
    a = FakeUpstream("A", watermark=10)
    client = live(a, ["A"])
    a.deliver(trades(a, [9, 11, 12]), watermark=12)
    assert offsets_sent(client) == [11, 12]
    assert client.cursor == 12


def test_snapshot_comes_first_in_offset_order() -> None:
    a = FakeUpstream(
        "A", watermark=10, latest={"trade": tick("A", 7), "quote": tick("A", 3, "quote")}
    )
    client = session(["A"])
    client.begin_live(a, snapshot=True)  # type: ignore[arg-type]
    chunk = written(client)
    assert chunk is not None and b"id: " not in chunk, "snapshots do not move the cursor"
    data = [json.loads(line[6:]) for line in chunk.decode().splitlines() if line.startswith("data")]
    assert [int(d["offset"]) for d in data] == [3, 7]


def test_a_stale_symbol_is_told_first() -> None:
    a = FakeUpstream("A", stale_frame=b"event: status\ndata: {}\n\n")
    client = live(a, ["A"])
    assert written(client) == b"event: status\ndata: {}\n\n"


def test_slow_consumer_is_disconnected_with_a_reason() -> None:
    a = FakeUpstream("A")
    client = live(a, ["A"], queue_limit=10)
    a.deliver(trades(a, list(range(1, 12))), watermark=11)
    final = written(client)
    assert final is not None and final.startswith(b"event: disconnect")
    assert json.loads(final.decode().split("data: ")[1])["reason"] == "slow_consumer"
    assert written(client) is None


def test_feed_restart_sends_one_reset_then_new_epoch_ticks() -> None:
    a = FakeUpstream("A", watermark=50)
    client = live(a, ["A"])
    a.restart("e2", 3)
    chunk = written(client)
    assert chunk is not None and chunk.count(b"event: reset") == 1
    assert b"id: e2-3" in chunk
    a.deliver(trades(a, [4]), watermark=4)
    assert offsets_sent(client) == [4]


def test_a_client_behind_gets_quotes_conflated_and_every_trade() -> None:
    a = FakeUpstream("A")
    client = live(a, ["A"], queue_limit=10)
    a.deliver(trades(a, [1, 2, 3, 4, 5, 6]), watermark=6)  # 6 > 10 // 2: now behind
    a.deliver([tick("A", 7, "quote"), tick("A", 8, "quote"), tick("A", 9, "trade")], 9)
    a.deliver([tick("A", 10, "quote")], 10)
    assert offsets_sent(client) == [1, 2, 3, 4, 5, 6, 9, 10]
    assert not client.outbox.behind, "caught up: no longer behind"


def test_clients_of_the_same_types_share_one_joined_write() -> None:
    a = FakeUpstream("A")
    first, second = live(a, ["A"]), live(a, ["A"])
    dispatch = TickDispatch(trades(a, [1, 2]), a.epoch, 2)
    for client in (first, second):
        client.on_ticks(a, dispatch)
    assert written(first) is written(second), "the same bytes object, joined once"


def test_a_client_behind_gets_books_and_open_bars_conflated_apart_from_quotes() -> None:
    """Each (symbol, kind) conflates on its own: the newest book of each depth, the newest open
    bar of each interval, the newest quote; final bars and trades are all kept."""
    a = FakeUpstream("A")
    client = live(a, ["A"], queue_limit=10)
    client.kinds = frozenset({"trade", "quote", "book:10", "bar:1m", "bar:1m:final"})
    a.deliver(trades(a, [1, 2, 3, 4, 5, 6]), watermark=6)  # now behind
    a.deliver(
        [
            kind_tick(7, "book:10"), kind_tick(8, "quote"), kind_tick(9, "bar:1m"),
            kind_tick(10, "book:10"), kind_tick(11, "bar:1m:final"), kind_tick(12, "bar:1m"),
            kind_tick(13, "quote"), kind_tick(14, "bar:1m"),
        ],
        14,
    )  # fmt: skip
    assert offsets_sent(client) == [1, 2, 3, 4, 5, 6, 10, 11, 13, 14]


def kind_tick(offset: int, kind: str) -> EncodedTick:
    return EncodedTick(offset, "A", kind, f"id: e-{offset}\ndata: x\n\n".encode(), 0)
