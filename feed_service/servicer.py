"""``tickstream.v1.FeedService``: Subscribe and ListSymbols over the hub."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from tickstream.v1 import feed_pb2, feed_pb2_grpc, tick_pb2

from tickstream_common.symbols import SYMBOL_PATTERN, is_valid_symbol

from .errors import FeedError, InvalidRequest, NotReady, UnknownSymbol
from .hub import TickHub
from .liveness import Liveness
from .metrics import FeedMetrics
from .security import TokenTable
from .wire import StoredTick, serialize_response, tick_batch_response

BOOK = tick_pb2.TICK_TYPE_BOOK
DEFAULT_TYPES = frozenset({tick_pb2.TICK_TYPE_TRADE, tick_pb2.TICK_TYPE_QUOTE})
"""What a request naming no types gets: trades and quotes, as before books and bars existed."""
KNOWN_TYPES = DEFAULT_TYPES | {BOOK, tick_pb2.TICK_TYPE_BAR}
MAX_SYMBOLS = 1_000
BATCH_LIMIT = 500
SCAN_LIMIT = 20_000

_STATUS = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    UnknownSymbol: grpc.StatusCode.NOT_FOUND,
    NotReady: grpc.StatusCode.UNAVAILABLE,
}


def _by_offset(tick: StoredTick) -> int:
    return tick.offset


def _shown(text: str) -> str:
    """A bounded, quoted rendering of client input for error messages."""
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


@dataclass(frozen=True, slots=True)
class SubscriptionPlan:
    """A validated Subscribe request."""

    symbols: frozenset[str]
    types: frozenset[int]
    start: str  # "live", "after" or "earliest"
    after: feed_pb2.StreamPosition | None
    snapshot: bool
    progress_updates: bool


def plan_subscription(request: feed_pb2.SubscribeRequest, hub: TickHub) -> SubscriptionPlan:
    """Validate ``request`` against the hub's symbols.

    Raises InvalidRequest (empty or malformed fields), UnknownSymbol (names every unknown
    symbol) or NotReady (the source is still loading).
    """
    if not hub.ready:
        raise NotReady("the feed is still loading its source; retry shortly")
    if not request.symbols:
        raise InvalidRequest("symbols is empty: name at least one symbol")
    symbols = frozenset(request.symbols)
    if len(symbols) > MAX_SYMBOLS:
        raise InvalidRequest(f"too many symbols: {len(symbols)} > {MAX_SYMBOLS}")
    malformed = sorted(s for s in symbols if not is_valid_symbol(s))
    if malformed:
        raise InvalidRequest(
            f"malformed symbol {_shown(malformed[0])}: expected {SYMBOL_PATTERN.pattern}"
        )
    unknown = sorted(s for s in symbols if not hub.knows(s))
    if unknown:
        raise UnknownSymbol(f"unknown symbol: {', '.join(unknown[:10])}")
    types = frozenset(request.types) or DEFAULT_TYPES
    if not types <= KNOWN_TYPES:
        raise InvalidRequest("types holds an unknown or unspecified TickType")
    start = request.WhichOneof("start") or "live"
    if start == "earliest" and not request.earliest:
        start = "live"  # earliest explicitly set to false
    after = request.after if start == "after" else None
    if after is not None and not after.epoch:
        raise InvalidRequest("after.epoch is empty: resume needs the epoch the offset came from")
    return SubscriptionPlan(
        symbols=symbols,
        types=types,
        start=start,
        after=after,
        snapshot=request.snapshot,
        progress_updates=request.progress_updates,
    )


class FeedServicer(feed_pb2_grpc.FeedServiceServicer):
    """Streams the hub's ticks to each subscriber from its own cursor into the history.

    Every stream starts with a Heartbeat (epoch, head). A subscriber that falls out of the
    history gets a Reset(SLOW_CONSUMER) and continues from the head; a quiet stream gets a
    Heartbeat after ``heartbeat_interval`` seconds of silence. On shutdown streams end with
    UNAVAILABLE.
    """

    def __init__(
        self,
        hub: TickHub,
        metrics: FeedMetrics,
        heartbeat_interval: float,
        liveness: Liveness | None = None,
    ) -> None:
        self._hub = hub
        self._liveness = liveness or Liveness(stale_after=10.0)
        self._metrics = metrics
        self._heartbeat_interval = heartbeat_interval
        self.closing = False
        self.tokens: TokenTable | None = None  # set when clients must present tokens
        self.bar_intervals: list[str] = []  # what ListSymbols reports

    async def Subscribe(
        self, request: feed_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[feed_pb2.SubscribeResponse | bytes]:
        try:
            plan = plan_subscription(request, self._hub)
        except FeedError as error:
            code = _STATUS[type(error)]
            self._metrics.rejected_requests.labels(code.name).inc()
            await context.abort(code, str(error))
        if self.tokens is not None:
            grant = self.tokens.lookup(context.invocation_metadata())
            denied = sorted(s for s in plan.symbols if grant is None or not grant.allows(s))
            if denied:
                self._metrics.rejected_requests.labels("PERMISSION_DENIED").inc()
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"this client's token does not allow {', '.join(denied[:10])}",
                )
        self._metrics.subscribe_requests.inc()
        self._metrics.active_subscriptions.inc()
        try:
            async for response in self._stream(plan):
                if context.done():  # the subscriber left: writing would only fail and log
                    return
                yield response
            await context.abort(grpc.StatusCode.UNAVAILABLE, "feed is shutting down; reconnect")
        except NotReady as error:
            self._metrics.rejected_requests.labels("UNAVAILABLE").inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
        finally:
            self._metrics.active_subscriptions.dec()

    def _reset(self, reason: int, message: str, cursor: int) -> feed_pb2.SubscribeResponse:
        """A Reset saying the stream goes on with the ticks after ``cursor``."""
        self._metrics.resets.labels(feed_pb2.ResetReason.Name(reason)).inc()
        return feed_pb2.SubscribeResponse(
            reset=feed_pb2.Reset(
                reason=reason, message=message, epoch=self._hub.epoch, head_offset=cursor
            )
        )

    def _start_cursor(
        self, plan: SubscriptionPlan
    ) -> tuple[int, feed_pb2.SubscribeResponse | None]:
        """The offset after which the stream starts, and the Reset to send first, if any.

        A position from another epoch (the feed restarted) goes on from the oldest tick of this
        epoch that the history holds, so nothing published since the restart is skipped."""
        hub, history = self._hub, self._hub.history
        head = history.head_offset
        oldest = max(0, history.earliest_offset - 1)
        if plan.start == "earliest":
            return oldest, None
        if plan.after is None:
            return head, None
        if plan.after.epoch != hub.epoch:
            return oldest, self._reset(
                feed_pb2.RESET_REASON_EPOCH_CHANGED,
                f"epoch {_shown(plan.after.epoch)} is not the feed's epoch {hub.epoch}",
                oldest,
            )
        offset = plan.after.offset
        if offset > head:
            return head, self._reset(
                feed_pb2.RESET_REASON_OFFSET_AHEAD,
                f"offset {offset} is ahead of head {head}",
                head,
            )
        if not history.covers_after(offset):
            return head, self._reset(
                feed_pb2.RESET_REASON_OFFSET_TOO_OLD,
                f"offset {offset} is older than the history (earliest {history.earliest_offset})",
                head,
            )
        return offset, None

    def _opening(
        self, plan: SubscriptionPlan
    ) -> tuple[int, list[feed_pb2.SubscribeResponse | bytes]]:
        """The start cursor and the opening messages: Heartbeat, Reset, snapshot, the status of
        each stale symbol. All taken at one instant, with no await in between: ticks published
        while they are being written come after the cursor, never inside the snapshot."""
        hub, liveness = self._hub, self._liveness
        cursor, reset = self._start_cursor(plan)
        opening: list[feed_pb2.SubscribeResponse | bytes] = [
            feed_pb2.SubscribeResponse(heartbeat=hub.heartbeat())
        ]
        if reset is not None:
            opening.append(reset)
        from_head = cursor == hub.head_offset
        bases = self._book_bases(plan, cursor)
        if plan.snapshot and from_head and (plan.start == "live" or reset is not None):
            # Sent even when empty, so the client knows the snapshot is complete. Not when the
            # stream goes on from older ticks (after an epoch change): they come after it.
            # The books are in the same batch: a snapshot is one message.
            latest = sorted(hub.snapshot(plan.symbols, plan.types) + bases, key=_by_offset)
            opening.append(tick_batch_response(latest, cursor))
        elif bases:
            opening.append(tick_batch_response(bases, cursor))
        opening.extend(
            feed_pb2.SubscribeResponse(status=liveness.status(symbol))
            for symbol in sorted(plan.symbols)
            if liveness.is_stale(symbol)
        )
        return cursor, opening

    def _from_oldest(self, plan: SubscriptionPlan) -> bool:
        """Whether the stream starts at the oldest retained tick (``earliest``, or a position
        from another epoch): that point moves while the opening is written, and is followed
        rather than the subscriber called slow (a full history evicts it at once)."""
        after = plan.after
        return plan.start == "earliest" or (after is not None and after.epoch != self._hub.epoch)

    def _book_bases(self, plan: SubscriptionPlan, cursor: int) -> list[StoredTick]:
        """For a subscriber to books: each symbol's whole book as of ``cursor``, one snapshot
        tick a symbol (offset: its last update's, at or before ``cursor``), so the updates
        after ``cursor`` have a book to apply to. Sent whatever ``snapshot`` says, as one
        batch (with the snapshot's ticks when there is one)."""
        if BOOK not in plan.types:
            return []
        return self._hub.book_bases(sorted(plan.symbols), cursor)

    async def _catch_up(self, plan: SubscriptionPlan) -> None:
        """On a shared backbone, a resume position from another replica may be ahead of what
        this one has read yet: wait up to the hub's ``catch_up_s`` for it, then for the
        backbone's last message (``hub.catch_up``). Raises NotReady while this replica is
        behind the backbone: answering ``offset_ahead`` from its head would send the client
        ticks it already has, under ids lower than the one it resumed from. A position past
        the backbone's end gets ``offset_ahead`` (see _start_cursor)."""
        hub, after = self._hub, plan.after
        if after is None or after.epoch != hub.epoch or not hub.catch_up_s:
            return
        deadline = asyncio.get_running_loop().time() + hub.catch_up_s
        while after.offset > hub.head_offset and not self.closing:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                await hub.catch_up()
                return
            await hub.wait_beyond(hub.head_offset, left)

    async def _stream(
        self, plan: SubscriptionPlan
    ) -> AsyncIterator[feed_pb2.SubscribeResponse | bytes]:
        """The stream's messages; tick batches come pre-serialized (see ``wire``)."""
        hub, history, metrics = self._hub, self._hub.history, self._metrics
        clock = asyncio.get_running_loop().time
        liveness = self._liveness
        status_seen = liveness.version
        await self._catch_up(plan)
        cursor, opening = self._opening(plan)
        for message in opening:
            yield message
        symbols, types = plan.symbols, plan.types
        every_type = types >= KNOWN_TYPES
        last_sent = clock()
        from_earliest = self._from_oldest(plan)
        while not self.closing:
            if from_earliest:
                cursor = max(cursor, history.earliest_offset - 1)
                from_earliest = False
            if not history.covers_after(cursor):
                cursor = history.head_offset
                yield self._reset(
                    feed_pb2.RESET_REASON_SLOW_CONSUMER,
                    "the subscriber fell behind the retained history",
                    cursor,
                )
                if bases := self._book_bases(plan, cursor):
                    yield tick_batch_response(bases, cursor)
                last_sent = clock()
            if liveness.version != status_seen:
                # State changes come before the ticks stored after them: "live" precedes the
                # tick that revived a stale symbol.
                for status in liveness.changes_since(status_seen, symbols):
                    yield feed_pb2.SubscribeResponse(status=status)
                    last_sent = clock()
                status_seen = liveness.version
            batch: list[StoredTick] = []
            scanned = cursor
            for tick in history.after(cursor, SCAN_LIMIT):
                scanned = tick.offset
                if tick.symbol in symbols and (every_type or tick.tick_type in types):
                    batch.append(tick)
                    if len(batch) >= BATCH_LIMIT:
                        break
            if scanned > cursor:
                cursor = scanned
                if batch or plan.progress_updates:
                    yield tick_batch_response(batch, cursor)
                    metrics.ticks_sent.inc(len(batch))
                    last_sent = clock()
                continue
            quiet_for = clock() - last_sent
            if quiet_for >= self._heartbeat_interval:
                yield feed_pb2.SubscribeResponse(heartbeat=hub.heartbeat())
                last_sent = clock()
                continue
            await hub.wait_beyond(cursor, self._heartbeat_interval - quiet_for)

    async def ListSymbols(
        self, request: feed_pb2.ListSymbolsRequest, context: grpc.aio.ServicerContext
    ) -> feed_pb2.ListSymbolsResponse:
        if not self._hub.ready:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the feed is still loading its source")
        infos = []
        wanted = set(request.symbols)
        for known in self._hub.symbols(wanted or None):
            info = feed_pb2.SymbolInfo()
            info.CopyFrom(known)
            info.MergeFrom(self._liveness.status_fields(known.symbol))
            infos.append(info)
        return feed_pb2.ListSymbolsResponse(
            symbols=infos, epoch=self._hub.epoch, bar_intervals=self.bar_intervals
        )

    async def ListSources(
        self, request: feed_pb2.ListSourcesRequest, context: grpc.aio.ServicerContext
    ) -> feed_pb2.ListSourcesResponse:
        handles = sorted(self._liveness.sources.values(), key=lambda h: h.name)
        return feed_pb2.ListSourcesResponse(sources=[h.info() for h in handles])


def add_to_server(servicer: FeedServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` as ``tickstream.v1.FeedService`` on ``server``.

    As the generated ``add_FeedServiceServicer_to_server``, except that Subscribe's responses
    may be pre-serialized bytes (``wire.tick_batch_response``) as well as messages.
    """
    handlers = {
        "Subscribe": grpc.unary_stream_rpc_method_handler(
            servicer.Subscribe,
            request_deserializer=feed_pb2.SubscribeRequest.FromString,
            response_serializer=serialize_response,
        ),
        "ListSymbols": grpc.unary_unary_rpc_method_handler(
            servicer.ListSymbols,
            request_deserializer=feed_pb2.ListSymbolsRequest.FromString,
            response_serializer=feed_pb2.ListSymbolsResponse.SerializeToString,
        ),
        "ListSources": grpc.unary_unary_rpc_method_handler(
            servicer.ListSources,
            request_deserializer=feed_pb2.ListSourcesRequest.FromString,
            response_serializer=feed_pb2.ListSourcesResponse.SerializeToString,
        ),
    }
    service = feed_pb2.DESCRIPTOR.services_by_name["FeedService"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)
