"""Outbox: one write per flush, slices for a client far behind, conflation, slow consumers."""

from __future__ import annotations

import json

from edge_service.metrics import EdgeMetrics
from edge_service.outbox import WRITE_LIMIT, Outbox
from tests.unit.edge_service.fakes import FakeSink


def outbox(event_limit: int = 100, byte_limit: int = 1_000_000) -> tuple[Outbox, list[Outbox]]:
    ready: list[Outbox] = []
    box = Outbox(
        event_limit=event_limit, byte_limit=byte_limit, metrics=EdgeMetrics(), on_ready=ready.append
    )
    return box, ready


def test_pushes_before_a_flush_go_out_in_one_write_and_mark_ready_once() -> None:
    box, ready = outbox()
    box.sink = sink = FakeSink()
    box.push(b"a\n\n", 1, 5)
    box.push(b"b\n\n", 2, 7)
    assert ready == [box], "one on_ready per pass, however many pushes"
    assert box.flush() == (1, 3, 5)
    assert sink.writes == [b"a\n\nb\n\n"] and sink.wakes == 0
    assert box.queued == 0 and box.queued_bytes == 0
    box.push(b"c\n\n")
    assert ready == [box, box], "ready again after the flush"


def test_a_paused_connection_leaves_bytes_queued_and_wakes_its_own_task() -> None:
    box, _ = outbox()
    box.sink = sink = FakeSink(open=False)
    box.push(b"a\n\n")
    assert box.flush() == (0, 0, 0)
    assert sink.wakes == 1 and box.queued == 1
    sink.open = True
    box.flush()
    assert sink.writes == [b"a\n\n"]


def test_a_backlog_is_written_in_slices_of_about_the_write_limit() -> None:
    box, _ = outbox(event_limit=10_000, byte_limit=10_000_000)
    frame = b"x" * 1000
    for _ in range(200):
        box.push(frame)
    chunk, count, _ = box.take()
    assert WRITE_LIMIT <= len(chunk) < WRITE_LIMIT + len(frame)
    assert count == len(chunk) // len(frame)


def test_behind_quotes_conflate_per_symbol_trades_stay_and_catching_up_ends_it() -> None:
    box, _ = outbox(event_limit=10)
    for n in range(6):
        box.push(b"trade %d\n\n" % n)
    assert box.behind
    box.push_quote("A", b"quote A1\n\n", 1)
    box.push_quote("B", b"quote B1\n\n", 1)
    box.push_quote("A", b"quote A2\n\n", 2)
    box.push(b"trade 6\n\n")
    chunk = box.take()[0].decode()
    assert "quote A1" not in chunk and chunk.index("quote B1") < chunk.index("quote A2")
    assert chunk.count("trade") == 7
    assert not box.behind, "written out: no longer behind"


def test_past_the_limit_the_queue_is_dropped_for_a_slow_consumer_disconnect() -> None:
    box, _ = outbox(event_limit=3)
    box.sink = sink = FakeSink(open=False)
    for _ in range(4):
        box.push(b"t\n\n")
    assert box.ended and box.done and box.queued == 0
    assert box.final is not None
    assert json.loads(box.final.decode().split("data: ")[1])["reason"] == "slow_consumer"
    box.flush()
    assert sink.wakes == 1, "its task writes the final event"
    box.push(b"late\n\n")
    assert box.queued == 0, "nothing is queued after the end"


def test_heartbeat_only_for_a_stream_that_carried_nothing_since_the_last_round() -> None:
    box, _ = outbox()
    box.heartbeat(b":ping\n\n")
    assert box.take()[0] == b":ping\n\n"
    box.heartbeat(b":ping\n\n")
    assert box.queued_bytes == 0, "the ping itself counts as traffic for one round"
    box.heartbeat(b":ping\n\n")
    assert box.take()[0] == b":ping\n\n"
