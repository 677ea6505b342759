"""``subscribe``: an async iterator over a feed's ticks that survives reconnects and restarts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from contextlib import aclosing
from dataclasses import replace
from types import TracebackType
from typing import Any, Literal, TypeAlias

import grpc
from tickstream.v1 import feed_pb2, feed_pb2_grpc, tick_pb2

from .connection import Backoff, call_metadata, open_channel
from .errors import TERMINAL_CODES, SubscribeError
from .events import Event, Position, Reset, reset_event, status_event, tick_to_dict

log = logging.getLogger(__name__)

Start: TypeAlias = Position | tuple[str, int] | Literal["earliest"] | None
TYPE_NAMES = {
    "trade": tick_pb2.TICK_TYPE_TRADE,
    "quote": tick_pb2.TICK_TYPE_QUOTE,
    "book": tick_pb2.TICK_TYPE_BOOK,
    "bar": tick_pb2.TICK_TYPE_BAR,
}


def parse_types(types: Iterable[str | int] | None) -> list[int]:
    """``["trade", "quote", "book", "bar"]`` (or ``TickType`` values) as ``TickType`` values;
    None or empty means trades and quotes (the feed's default). With ``"book"``, each symbol's
    book comes first as one snapshot tick (``tick.book.snapshot``), then its updates. Raises
    ValueError for an unknown name or value."""
    parsed: list[int] = []
    for kind in types or ():
        value = TYPE_NAMES.get(kind) if isinstance(kind, str) else kind
        if value not in TYPE_NAMES.values():
            raise ValueError(f"unknown tick type {kind!r}: expected one of {sorted(TYPE_NAMES)}")
        parsed.append(value)
    return parsed


def parse_start(after: Start) -> Position | Literal["earliest"] | None:
    """Check ``after``: None (live), ``"earliest"`` or an ``(epoch, offset)`` pair. Raises
    ValueError otherwise."""
    if after is None or after == "earliest":
        return after
    if isinstance(after, tuple) and len(after) == 2:
        epoch, offset = after
        if isinstance(epoch, str) and epoch and isinstance(offset, int) and offset >= 0:
            return Position(epoch, offset)
    raise ValueError(f"after must be None, 'earliest' or (epoch, offset), not {after!r}")


class _EpochChanged(Exception):
    """The resumed stream opened in another epoch: replay that epoch from its start."""


class Subscription:
    """A subscription to ``symbols`` on the feed at ``target``; iterate it for events.

    Yields ticks (dicts, see :mod:`tickstream_client.events`) in offset order, :class:`Reset`
    and :class:`SymbolStatus` events. The stream position (:attr:`position`) is kept as ticks
    are yielded. When the connection is lost (UNAVAILABLE and other non-terminal statuses, a
    dropped connection, or no message for ``heartbeat_timeout`` seconds: the feed sends a
    Heartbeat every second on a quiet stream) it reconnects with jittered exponential backoff
    (0.1 s doubling to 3 s) and resumes after :attr:`position`: no tick is yielded twice, and
    none is missed while the feed's history covers the outage; otherwise a :class:`Reset` comes
    first. When the feed restarted with a new epoch, ``on_new_epoch="replay"`` (default) yields
    a Reset (``epoch_changed``) then every tick the new epoch still holds, from its first;
    ``"live"`` yields a Reset at the new epoch's head, then the ticks stored after it.

    Raises :class:`SubscribeError` for terminal statuses: INVALID_ARGUMENT, PERMISSION_DENIED,
    UNAUTHENTICATED, and NOT_FOUND on the first connection (an unknown symbol). NOT_FOUND after
    a stream was open means a restarted feed does not know the symbol yet (a producer's symbol
    before its first tick): it is retried like UNAVAILABLE.

    Use as ``async with subscribe(...) as stream: async for event in stream: ...``; leaving the
    block closes the channel. One iteration at a time.
    """

    def __init__(
        self,
        target: str,
        symbols: Sequence[str],
        *,
        types: Iterable[str | int] | None = None,
        after: Start = None,
        snapshot: bool = False,
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        heartbeat_timeout: float = 5.0,
        on_new_epoch: Literal["replay", "live"] = "replay",
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if isinstance(symbols, str) or not symbols:
            raise ValueError("symbols must be a non-empty sequence of symbol names")
        if heartbeat_timeout <= 0 or on_new_epoch not in ("replay", "live"):
            raise ValueError("heartbeat_timeout must be > 0 and on_new_epoch replay or live")
        self.target = target
        self.symbols = list(dict.fromkeys(symbols))
        self.reconnects = 0
        """Connections lost and retried so far."""
        self._types = parse_types(types)
        start = parse_start(after)
        self._earliest = start == "earliest"
        self._position = start if isinstance(start, Position) else None
        self._snapshot = snapshot
        self._metadata = call_metadata(token)
        self._credentials = credentials
        self._channel_options = channel_options
        self._heartbeat_timeout = heartbeat_timeout
        self._on_new_epoch = on_new_epoch
        self._live_from: int | None = None  # on_new_epoch "live": the new epoch's head
        self._backoff = Backoff()
        self._connected_once = False
        self._replay_note: str | None = None  # set: the next stream replays a new epoch
        self._iterator: AsyncGenerator[Event, None] | None = None

    @property
    def position(self) -> Position | None:
        """``(epoch, offset)``: every tick up to ``offset`` was yielded or skipped by the
        subscription's filter; None before the first connection of a live subscription."""
        return self._position

    def __aiter__(self) -> AsyncIterator[Event]:
        if self._iterator is None:
            self._iterator = self._events()
        return self._iterator

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop: cancel the stream and close the channel (from the iterating task)."""
        if self._iterator is not None:
            await self._iterator.aclose()

    def _request(self) -> tuple[feed_pb2.SubscribeRequest, str]:
        """The next Subscribe request and how it starts: ``live``, ``after`` or ``earliest``."""
        request = feed_pb2.SubscribeRequest(symbols=self.symbols, types=self._types)
        if self._replay_note is not None or (self._position is None and self._earliest):
            request.earliest = True
            return request, "earliest"
        if self._position is not None:
            request.after.epoch, request.after.offset = self._position
            return request, "after"
        request.snapshot = self._snapshot
        return request, "live"

    async def _events(self) -> AsyncGenerator[Event, None]:
        channel = open_channel(self.target, self._credentials, self._channel_options)
        stub = feed_pb2_grpc.FeedServiceStub(channel)
        try:
            while True:
                request, start = self._request()
                call = stub.Subscribe(request, metadata=self._metadata)
                try:
                    async with aclosing(self._read(call, start, request.snapshot)) as events:
                        async for event in events:
                            yield event
                    reason = "the feed ended the stream"
                except grpc.aio.AioRpcError as error:
                    self._raise_if_terminal(error)
                    reason = f"{error.code().name}: {error.details()}"
                except TimeoutError:
                    reason = f"no message for {self._heartbeat_timeout:g} s"
                except _EpochChanged as change:
                    self._replay_note = str(change)
                    log.info("subscription %s: %s", ",".join(self.symbols), change)
                    continue
                finally:
                    call.cancel()
                self.reconnects += 1
                delay = self._backoff.next_delay()
                log.warning(
                    "subscription %s: %s; reconnecting in %.2f s after %s",
                    ",".join(self.symbols),
                    reason,
                    delay,
                    self._position,
                )
                await asyncio.sleep(delay)
        finally:
            await channel.close()

    def _raise_if_terminal(self, error: grpc.aio.AioRpcError) -> None:
        code = error.code()
        if code not in TERMINAL_CODES:
            return
        if code == grpc.StatusCode.NOT_FOUND and self._connected_once:
            return  # a restarted feed that has not seen the symbol yet
        raise SubscribeError(
            f"subscribe {','.join(self.symbols)}: {code.name}: {error.details()}",
            code,
            error.details() or "",
        ) from error

    async def _read(
        self, call: grpc.aio.UnaryStreamCall, start: str, snapshot: bool
    ) -> AsyncGenerator[Event, None]:
        """The events of one call. Raises TimeoutError after ``heartbeat_timeout`` s of silence,
        AioRpcError when the call fails, _EpochChanged (see :meth:`_open`)."""
        opening = True
        in_snapshot = snapshot
        while True:
            async with asyncio.timeout(self._heartbeat_timeout):
                response = await call.read()
            if response is grpc.aio.EOF:
                return
            kind = response.WhichOneof("event")
            if kind == "heartbeat":
                beat = response.heartbeat
                if opening:
                    if (reset := self._open(beat, start)) is not None:
                        yield reset
                else:
                    self._advance(beat.epoch, beat.head_offset)
            elif kind == "ticks":
                for tick in response.ticks.ticks:
                    if in_snapshot or self._take(tick.offset):
                        yield tick_to_dict(tick)
                in_snapshot = False
                if self._position is not None:
                    self._advance(self._position.epoch, response.ticks.head_offset)
            elif kind == "reset":
                event = reset_event(response.reset)
                if self._live_from is not None:  # see _open
                    event, self._live_from = replace(event, offset=self._live_from), None
                self._position = Position(event.epoch, event.offset)
                yield event
            elif kind == "status":
                yield status_event(response.status)
            opening = False

    def _open(self, beat: feed_pb2.Heartbeat, start: str) -> Reset | None:
        """Take a stream's opening Heartbeat: set the position where the stream starts; the
        Reset to yield when this stream replays a new epoch. Raises _EpochChanged when a resumed
        stream opens in another epoch and ``on_new_epoch`` is ``replay``."""
        self._connected_once = True
        self._backoff.reset()
        if start == "live":
            self._position = Position(beat.epoch, beat.head_offset)
        elif start == "earliest":
            self._position = Position(beat.epoch, max(0, beat.earliest_offset - 1))
            note, self._replay_note = self._replay_note, None
            if note is not None:
                return Reset("epoch_changed", note, *self._position)
        elif self._position is not None and beat.epoch != self._position.epoch:
            if self._on_new_epoch == "replay":
                raise _EpochChanged(
                    f"the feed's epoch is {beat.epoch}, not {self._position.epoch} (it "
                    "restarted and lost its history); replaying the new epoch from its start"
                )
            # "live": the feed's Reset goes on from the new epoch's oldest tick; this
            # subscription goes on from its head instead (older ticks are passed over).
            self._live_from = beat.head_offset
        return None

    def _take(self, offset: int) -> bool:
        """Whether a tick at ``offset`` is new; if so the position moves to it."""
        position = self._position
        assert position is not None, "ticks before the opening Heartbeat"
        if offset <= position.offset:
            return False
        self._position = Position(position.epoch, offset)
        return True

    def _advance(self, epoch: str, offset: int) -> None:
        """The stream is complete through ``offset`` of ``epoch``."""
        position = self._position
        if position is not None and position.epoch == epoch and offset > position.offset:
            self._position = Position(epoch, offset)


def subscribe(
    target: str,
    symbols: Sequence[str],
    *,
    types: Iterable[str | int] | None = None,
    after: Start = None,
    snapshot: bool = False,
    token: str | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    heartbeat_timeout: float = 5.0,
    on_new_epoch: Literal["replay", "live"] = "replay",
    channel_options: Sequence[tuple[str, Any]] = (),
) -> Subscription:
    """Subscribe to ``symbols`` on the feed at ``target`` ("host:port").

    ``types``: ``"trade"``/``"quote"``/``"book"``/``"bar"`` (None: trade and quote).
    ``after``: None starts live (with
    ``snapshot=True``, the latest trade and quote of each symbol come first, on the first
    connection only), ``"earliest"`` replays the retained history first, ``(epoch, offset)``
    resumes after that position (e.g. a saved :attr:`Subscription.position`). ``token`` is sent
    as ``authorization: Bearer <token>``; ``credentials`` turn on TLS. See :class:`Subscription`
    for what is yielded, the reconnect rules and the errors raised.
    """
    return Subscription(
        target,
        symbols,
        types=types,
        after=after,
        snapshot=snapshot,
        token=token,
        credentials=credentials,
        heartbeat_timeout=heartbeat_timeout,
        on_new_epoch=on_new_epoch,
        channel_options=channel_options,
    )
