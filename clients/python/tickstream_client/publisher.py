"""``Publisher``: batches ticks onto one ``IngestService.Publish`` stream, exactly once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
from tickstream.v1 import ingest_pb2, ingest_pb2_grpc

from .batches import Ack, BatchBook
from .connection import Backoff, call_metadata, open_channel
from .drafts import draft_from
from .errors import TERMINAL_CODES, PublishError

log = logging.getLogger(__name__)
CLOSE_GRACE_S = 2.0


@dataclass(slots=True)
class PublishStats:
    """Running totals: batches acknowledged, ticks the feed stored, ticks it recognised as
    duplicates (resent after a reconnect, or published twice), connections lost and retried,
    and the epoch and last offset of the latest acknowledgement."""

    batches: int = 0
    accepted: int = 0
    duplicates: int = 0
    reconnects: int = 0
    epoch: str = ""
    last_offset: int = 0


class Publisher:
    """Publishes ticks to the feed at ``target`` ("host:port") over one Publish stream.

    :meth:`publish` queues a tick; ticks are sent in batches of ``batch_size``, or after
    ``linger`` seconds when fewer are waiting. Each batch stays in memory until the feed
    acknowledges it; at ``max_in_flight`` unacknowledged batches :meth:`publish` waits (the
    back-pressure: memory holds at most about ``(max_in_flight + 1) * batch_size`` ticks).

    Exactly once: every tick carries a ``dedup_id``. A tick without one gets
    ``<producer>-<random>-<n>``, unique to this Publisher, which makes resends after a
    reconnect safe but cannot recognise ticks published again by a restarted process: for that,
    give each tick a dedup id derived from its data (e.g. the venue's trade id, or file name and
    line), unique per symbol. When the connection drops or the feed restarts (UNAVAILABLE and
    other non-terminal statuses, or no acknowledgement for ``ack_timeout`` s while batches are
    in flight), it reconnects with jittered exponential backoff (0.1 s doubling to 3 s) and
    resends every unacknowledged batch in order; the feed stores each tick once and counts the
    rest as duplicates. A feed that restarted with a new epoch has lost what it had
    acknowledged; unacknowledged batches are stored in the new epoch.

    Terminal statuses (INVALID_ARGUMENT, PERMISSION_DENIED, UNAUTHENTICATED,
    RESOURCE_EXHAUSTED) end publishing: the next :meth:`publish`, :meth:`flush` or
    :meth:`close` raises :class:`PublishError` naming the refused batch. ``on_ack`` is called
    with each :class:`Ack` (it must not block). ``producer`` is sent as ``tickstream-producer``
    metadata (the feed names the source ``publish:<producer>``); ``token`` as
    ``authorization: Bearer <token>``; ``credentials`` turn on TLS.

    Use as ``async with Publisher(...) as publisher:``; leaving the block normally waits for
    every acknowledgement, leaving it with an exception drops what is unacknowledged.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        producer: str | None = None,
        batch_size: int = 100,
        linger: float = 0.005,
        max_in_flight: int = 8,
        ack_timeout: float = 10.0,
        on_ack: Callable[[Ack], None] | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if linger < 0 or max_in_flight < 1 or ack_timeout <= 0:
            raise ValueError("need linger >= 0, max_in_flight >= 1 and ack_timeout > 0")
        self.target = target
        self.stats = PublishStats()
        self._book = BatchBook(batch_size, producer)
        self._metadata = call_metadata(token, producer)
        self._credentials = credentials
        self._channel_options = channel_options
        self._linger = linger
        self._max_in_flight = max_in_flight
        self._ack_timeout = ack_timeout
        self._on_ack = on_ack
        self._signal = asyncio.Event()
        self._linger_timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None
        self._error: BaseException | None = None
        self._closing = False
        self._progress_at = 0.0

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.close()
        else:
            await self.abort()

    async def publish(self, tick: ingest_pb2.TickDraft | Mapping[str, Any]) -> None:
        """Queue ``tick``: a ``TickDraft`` (see :func:`tickstream_client.trade` and
        :func:`~tickstream_client.quote`) or its JSON form as a dict. Waits while
        ``max_in_flight`` batches are unacknowledged. Raises ValueError for a tick the feed would
        refuse (nothing queued), PublishError after a terminal status, RuntimeError once closed."""
        draft = draft_from(tick)
        self._check_usable()
        self._start()
        while self._book.in_flight >= self._max_in_flight:
            await self._changed()
            self._check_usable()
        if self._book.add(draft):
            self._cut()
        elif self._linger_timer is None:
            loop = asyncio.get_running_loop()
            self._linger_timer = loop.call_later(self._linger, self._cut)

    async def flush(self) -> None:
        """Send what is queued and wait until every batch is acknowledged (across reconnects:
        bound it with ``asyncio.timeout``). Raises PublishError after a terminal status."""
        if self._error is not None:
            raise self._error
        if self._task is None:
            return
        self._cut()
        while not self._book.idle and self._error is None:
            await self._changed()
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        """:meth:`flush`, then end the stream and close the channel. Raises as flush."""
        try:
            await self.flush()
        finally:
            self._closing = True
            self._wake()
            if self._task is not None:
                await asyncio.wait({self._task}, timeout=CLOSE_GRACE_S)
            await self.abort()

    async def abort(self) -> None:
        """Stop now: cancel the stream, close the channel, drop unacknowledged ticks."""
        self._closing = True
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()
        dropped = self._book.drop_all()
        if dropped:
            log.warning("publisher %s: closed with %d unacknowledged ticks", self.target, dropped)

    # ----- internals ---------------------------------------------------------------------

    def _wake(self) -> None:
        """Something changed (a batch cut or acknowledged, a failure): wake every waiter."""
        self._signal.set()
        self._signal = asyncio.Event()

    async def _changed(self) -> None:
        await self._signal.wait()

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closing:
            raise RuntimeError("the publisher is closed")

    def _start(self) -> None:
        if self._task is None:
            self._channel = open_channel(self.target, self._credentials, self._channel_options)
            self._task = asyncio.create_task(self._run(self._channel), name="tickstream-publish")

    def _cut(self) -> None:
        """Turn every pending tick into batches (from ``publish``, ``flush`` or the timer)."""
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        if self._book.in_flight == 0:
            self._progress_at = asyncio.get_running_loop().time()
        while self._book.cut() is not None:
            pass
        self._wake()

    async def _run(self, channel: grpc.aio.Channel) -> None:
        """Open Publish streams until closed or failed; never leaves callers waiting."""
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        backoff = Backoff()
        try:
            while not (self._closing and self._book.idle):
                call = stub.Publish(metadata=self._metadata)
                try:
                    await self._session(call, backoff)
                    reason = "the feed ended the stream"
                except _CallCancelled as cancelled:
                    reason = str(cancelled)
                except grpc.aio.AioRpcError as error:
                    if error.code() in TERMINAL_CODES:
                        self._fail(error.code(), error.details() or "")
                        return
                    reason = f"{error.code().name}: {error.details()}"
                finally:
                    call.cancel()
                if self._closing and self._book.idle:
                    return
                self.stats.reconnects += 1
                delay = backoff.next_delay()
                log.warning(
                    "publisher %s: %s; reconnecting in %.2f s, %d batches to resend",
                    self.target,
                    reason,
                    delay,
                    self._book.in_flight,
                )
                await asyncio.sleep(delay)
        except Exception as error:  # a protocol violation or a bug: fail, do not hang callers
            log.exception("publisher %s stopped", self.target)
            self._fail(None, repr(error))

    async def _session(self, call: grpc.aio.StreamStreamCall, backoff: Backoff) -> None:
        """One stream: resend the unacknowledged batches, send new ones, settle acks."""
        self._progress_at = asyncio.get_running_loop().time()
        helpers = [asyncio.create_task(self._write(call)), asyncio.create_task(self._watch(call))]
        try:
            while (response := await _read(call)) is not grpc.aio.EOF:
                assert isinstance(response, ingest_pb2.PublishResponse)
                self._settle(response)
                backoff.reset()
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def _write(self, call: grpc.aio.StreamStreamCall) -> None:
        next_id = self._book.first_unsent_id
        try:
            while True:
                for request in self._book.unacked_from(next_id):
                    await call.write(request)
                    next_id = request.batch_id + 1
                if self._closing and self._book.idle:
                    await call.done_writing()
                    return
                await self._changed()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            call.cancel()  # the reader sees the call's status and reconnects

    async def _watch(self, call: grpc.aio.StreamStreamCall) -> None:
        """Cancel the call when batches wait longer than ``ack_timeout`` for an ack."""
        clock = asyncio.get_running_loop().time
        while True:
            await asyncio.sleep(min(1.0, self._ack_timeout / 4))
            if self._book.in_flight and clock() - self._progress_at > self._ack_timeout:
                log.warning("publisher %s: no ack for %g s", self.target, self._ack_timeout)
                call.cancel()
                return

    def _settle(self, response: ingest_pb2.PublishResponse) -> None:
        ack = self._book.ack(response)
        self._progress_at = asyncio.get_running_loop().time()
        stats = self.stats
        if stats.epoch and ack.epoch != stats.epoch:
            log.warning(
                "publisher %s: the feed's epoch changed from %s to %s (it restarted): ticks "
                "acknowledged before are not resent",
                self.target,
                stats.epoch,
                ack.epoch,
            )
        stats.batches += 1
        stats.accepted += ack.accepted
        stats.duplicates += ack.duplicates
        stats.epoch, stats.last_offset = ack.epoch, ack.last_offset
        self._wake()
        if self._on_ack is not None:
            try:
                self._on_ack(ack)
            except Exception:
                log.exception("publisher %s: on_ack raised", self.target)

    def _fail(self, code: grpc.StatusCode | None, details: str) -> None:
        batch_id = self._book.first_unsent_id if self._book.in_flight else 0
        dropped = self._book.drop_all()
        name = code.name if code is not None else "client error"
        message = (
            f"publish to {self.target}: batch {batch_id} refused: {name}: {details}; "
            f"{dropped} unacknowledged ticks dropped"
        )
        self._error = PublishError(message, code, details, batch_id=batch_id, dropped_ticks=dropped)
        self._wake()


class _CallCancelled(Exception):
    """This publisher cancelled its own call (no ack in time, or a write failed)."""


async def _read(call: grpc.aio.StreamStreamCall) -> object:
    """``call.read()``; a call cancelled by this publisher raises _CallCancelled, not the
    CancelledError grpc-aio raises there, which would end the publisher's task for good and
    leave publish() and close() waiting forever (found by a breaker: SIGSTOP of the feed for
    longer than ack_timeout)."""
    try:
        return await call.read()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the publisher itself is being cancelled
        raise _CallCancelled("the call was cancelled (no ack in time, or a write failed)") from None
