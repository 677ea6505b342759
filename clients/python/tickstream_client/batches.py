"""The publisher's bookkeeping, apart from any I/O: pending ticks, batches, acknowledgements."""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass

from tickstream.v1 import ingest_pb2

MAX_PREFIX = 80  # dedup ids stay under the feed's 128 characters


@dataclass(frozen=True, slots=True)
class Ack:
    """The feed's acknowledgement of one batch: ``ticks`` sent, ``accepted`` stored,
    ``duplicates`` already stored earlier (a resend), ``last_offset`` the offset of the last tick
    stored (the head offset when none was), ``epoch`` the history the offsets belong to."""

    batch_id: int
    ticks: int
    accepted: int
    duplicates: int
    last_offset: int
    epoch: str


class AckMismatch(Exception):
    """An acknowledgement that does not answer the oldest unacknowledged batch."""


class BatchBook:
    """Ticks waiting to form a batch, and batches sent but not yet acknowledged, in order.

    Batch ids count from 1 in the order batches are cut; the unacknowledged ones are always a
    contiguous run, and the feed acknowledges in order, so an acknowledgement must answer the
    oldest. A tick without a ``dedup_id`` gets ``<prefix>-<n>``: unique for this book (the
    prefix holds a random part), so a batch resent after a reconnect is recognised as a
    duplicate by the feed; a new book (a restarted process) never reuses those ids.
    """

    def __init__(self, batch_size: int, producer: str | None = None) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        name = (producer or "py")[: MAX_PREFIX - 13]
        self.dedup_prefix = f"{name}-{secrets.token_hex(6)}"
        self.pending: list[ingest_pb2.TickDraft] = []
        self.unacked: deque[ingest_pb2.PublishRequest] = deque()
        self._next_batch = 1
        self._next_dedup = 1

    def add(self, draft: ingest_pb2.TickDraft) -> bool:
        """Queue ``draft`` (given a dedup id if it has none); True when a full batch waits."""
        if not draft.dedup_id:
            draft.dedup_id = f"{self.dedup_prefix}-{self._next_dedup}"
            self._next_dedup += 1
        self.pending.append(draft)
        return len(self.pending) >= self.batch_size

    def cut(self) -> ingest_pb2.PublishRequest | None:
        """Turn up to ``batch_size`` pending ticks into the next batch (now unacknowledged);
        None when nothing is pending."""
        if not self.pending:
            return None
        ticks, self.pending = self.pending[: self.batch_size], self.pending[self.batch_size :]
        request = ingest_pb2.PublishRequest(ticks=ticks, batch_id=self._next_batch)
        self._next_batch += 1
        self.unacked.append(request)
        return request

    def ack(self, response: ingest_pb2.PublishResponse) -> Ack:
        """Settle the oldest batch with ``response``. Raises AckMismatch when it does not match."""
        if not self.unacked or self.unacked[0].batch_id != response.batch_id:
            oldest = self.unacked[0].batch_id if self.unacked else None
            raise AckMismatch(f"acknowledgement of batch {response.batch_id}, expected {oldest}")
        request = self.unacked.popleft()
        return Ack(
            request.batch_id,
            len(request.ticks),
            response.accepted,
            response.duplicates,
            response.last_offset,
            response.epoch,
        )

    def unacked_from(self, batch_id: int) -> list[ingest_pb2.PublishRequest]:
        """The unacknowledged batches with an id of ``batch_id`` or more, in order."""
        return [request for request in self.unacked if request.batch_id >= batch_id]

    @property
    def first_unsent_id(self) -> int:
        """The id of the oldest unacknowledged batch, else of the next batch to be cut: where
        a new connection starts sending."""
        return self.unacked[0].batch_id if self.unacked else self._next_batch

    @property
    def in_flight(self) -> int:
        """Batches cut and not yet acknowledged."""
        return len(self.unacked)

    @property
    def idle(self) -> bool:
        """Nothing pending and nothing unacknowledged."""
        return not self.pending and not self.unacked

    def drop_all(self) -> int:
        """Forget every pending and unacknowledged tick; how many there were."""
        count = len(self.pending) + sum(len(request.ticks) for request in self.unacked)
        self.pending.clear()
        self.unacked.clear()
        return count
