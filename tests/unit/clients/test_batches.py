"""tickstream_client's publish bookkeeping (BatchBook) and reconnect backoff, without I/O."""

from __future__ import annotations

import random

import pytest
from tickstream.v1 import ingest_pb2
from tickstream_client import Backoff, trade
from tickstream_client.batches import Ack, AckMismatch, BatchBook


def response(batch_id: int, accepted: int, duplicates: int = 0) -> ingest_pb2.PublishResponse:
    return ingest_pb2.PublishResponse(
        batch_id=batch_id, accepted=accepted, duplicates=duplicates, last_offset=9, epoch="e"
    )


def test_batches_are_cut_in_order_and_acknowledged_oldest_first() -> None:
    book = BatchBook(batch_size=3, producer="desk")
    full, batches = [], []
    for n in range(7):
        full.append(book.add(trade("A", "1", str(n + 1))))
        if full[-1]:
            batches.append(book.cut())
    assert full == [False, False, True, False, False, True, False]
    assert len(book.pending) == 1
    batches.append(book.cut())
    assert book.cut() is None and book.pending == []
    assert [r.batch_id for r in batches if r] == [1, 2, 3]
    assert [len(r.ticks) for r in batches if r] == [3, 3, 1]
    assert [r.ticks[0].trade.size for r in batches if r] == ["1", "4", "7"]
    assert book.in_flight == 3 and book.first_unsent_id == 1
    assert [r.batch_id for r in book.unacked_from(2)] == [2, 3]
    with pytest.raises(AckMismatch, match="batch 2, expected 1"):
        book.ack(response(2, 3))
    assert book.ack(response(1, 2, 1)) == Ack(1, 3, 2, 1, 9, "e")
    assert book.first_unsent_id == 2, "a new connection resends from the oldest unacknowledged"
    book.ack(response(2, 3))
    book.ack(response(3, 1))
    assert book.idle and book.first_unsent_id == 4
    with pytest.raises(AckMismatch):
        book.ack(response(4, 1))


def test_generated_dedup_ids_are_unique_and_given_ones_kept() -> None:
    book, other = BatchBook(10, "desk"), BatchBook(10, "desk")
    drafts = [trade("A", "1", "1") for _ in range(3)] + [trade("A", "1", "1", dedup_id="t-9")]
    for draft in drafts:
        book.add(draft)
    ids = [d.dedup_id for d in book.pending]
    assert ids[:3] == [f"{book.dedup_prefix}-{n}" for n in (1, 2, 3)] and ids[3] == "t-9"
    assert book.dedup_prefix.startswith("desk-")
    assert other.dedup_prefix != book.dedup_prefix, "another publisher never reuses the ids"
    long_name = BatchBook(10, "p" * 500)
    long_name.add(trade("A", "1", "1"))
    assert len(long_name.pending[0].dedup_id) <= 128


def test_drop_all_counts_every_tick() -> None:
    book = BatchBook(2)
    for _ in range(5):
        book.add(trade("A", "1", "1"))
    book.cut()
    assert book.drop_all() == 5 and book.idle


def test_backoff_grows_with_jitter_caps_and_resets() -> None:
    backoff = Backoff(0.1, 3.0, random.Random(7))
    delays = [backoff.next_delay() for _ in range(10)]
    ceilings = [min(3.0, 0.1 * 2**n) for n in range(10)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == 10, "jittered"
    backoff.reset()
    assert backoff.next_delay() <= 0.1
    many = Backoff(0.1, 3.0)
    many.attempt = 10_000
    assert 1.5 <= many.next_delay() <= 3.0, "no overflow after many attempts"
    with pytest.raises(ValueError):
        Backoff(0, 1)
