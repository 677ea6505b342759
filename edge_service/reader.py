"""The feed's ``Subscribe`` stream as typed events: one interpreter of the protocol for the shared
upstreams and for the resume catch-up streams.

A call opens with a ``Heartbeat`` naming the epoch and the head (:class:`Opened`); later
heartbeats are watermarks (:class:`Progress`). ``TickBatch``, ``Reset`` and ``SymbolStatus``
become :class:`Ticks`, :class:`Reset` and :class:`Status`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tickstream.v1 import feed_pb2


@dataclass(frozen=True, slots=True)
class Opened:
    """The call's first message: the feed's ``epoch`` and its head offset then."""

    epoch: str
    head: int


@dataclass(frozen=True, slots=True)
class Progress:
    """Everything of the subscription up to ``head`` (in ``epoch``) was sent."""

    epoch: str
    head: int


@dataclass(frozen=True, slots=True)
class Ticks:
    """Ticks in offset order, and the head the stream has passed with them."""

    batch: feed_pb2.TickBatch


@dataclass(frozen=True, slots=True)
class Reset:
    """The stream could not continue where asked: it goes on from ``head`` in ``epoch``.
    ``reason`` is the ResetReason name without its prefix, lower case (``offset_too_old``)."""

    epoch: str
    head: int
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Status:
    """A symbol's state (live or stale) at the stream's start or when it changed."""

    status: feed_pb2.SymbolStatus


FeedEvent = Opened | Progress | Ticks | Reset | Status


class SubscribeReader:
    """Reads one call's responses in order; make a new reader for each call."""

    __slots__ = ("_opened",)

    def __init__(self) -> None:
        self._opened = False

    def read(self, response: feed_pb2.SubscribeResponse) -> FeedEvent | None:
        """The event of ``response``; None for a message of a kind this edge does not know."""
        kind = response.WhichOneof("event")
        if kind == "ticks":
            return Ticks(response.ticks)
        if kind == "heartbeat":
            beat = response.heartbeat
            if not self._opened:
                self._opened = True
                return Opened(beat.epoch, beat.head_offset)
            return Progress(beat.epoch, beat.head_offset)
        if kind == "reset":
            reset = response.reset
            name = feed_pb2.ResetReason.Name(reset.reason).removeprefix("RESET_REASON_").lower()
            return Reset(reset.epoch, reset.head_offset, name, reset.message)
        if kind == "status":
            return Status(response.status)
        return None
