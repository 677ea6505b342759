"""``tickstream.v1.IngestService``: producers' Publish streams into the ingest path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError
from tickstream.v1 import ingest_pb2, ingest_pb2_grpc

from .errors import FeedError, InvalidRequest, LimitExceeded, NotReady, PermissionDenied
from .hub import TickHub
from .ingest import Ingestor, InvalidDraft
from .liveness import Liveness, SourceHandle
from .metrics import FeedMetrics
from .security import ClientGrant, TokenTable

log = logging.getLogger(__name__)

PRODUCER_METADATA = "tickstream-producer"
"""Optional metadata naming a producer in ``ListSources`` when the feed checks no tokens (with
tokens, the token's client name is used)."""
MAX_PRODUCER_NAME = 64

CLOSE_SETTLE_S = 0.5
"""How long the end of a producer's requests waits to learn whether the producer closed its
stream or its connection was lost (see :func:`_call_was_lost`)."""

_STATUS = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidDraft: grpc.StatusCode.INVALID_ARGUMENT,
    LimitExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    NotReady: grpc.StatusCode.UNAVAILABLE,
}


@dataclass(slots=True)
class RateBucket:
    """Token bucket of ``rate`` ticks per second holding at most one second's worth."""

    rate: float
    level: float
    stamp: float

    @classmethod
    def full(cls, rate: float) -> RateBucket:
        return cls(rate, rate, time.monotonic())

    def reserve(self, count: int) -> float:
        """Spend ``count`` ticks, going into debt if need be; the seconds to wait before the
        batch may be stored (0 when the bucket held them). ``count`` is at most ``rate``."""
        now = time.monotonic()
        self.level = min(self.rate, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        self.level -= count
        return 0.0 if self.level >= 0 else -self.level / self.rate


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    """Stores each producer's batches through the :class:`Ingestor` and acknowledges them.

    One request is read, checked, stored and acknowledged before the next is read, so a producer
    faster than the feed is held back by gRPC flow control, never buffered without bound. Each
    stream is a source ``publish:<producer>`` in ``ListSources``; it ends when its last stream
    closes. Errors end the call with a status naming what was wrong (see the proto).
    """

    def __init__(
        self,
        hub: TickHub,
        ingestor: Ingestor,
        liveness: Liveness,
        metrics: FeedMetrics,
        max_batch: int,
        tokens: TokenTable | None,
    ) -> None:
        self._hub = hub
        self._ingestor = ingestor
        self._liveness = liveness
        self._metrics = metrics
        self._max_batch = max_batch
        self.tokens = tokens
        self.closing = False
        self._buckets: dict[str, RateBucket] = {}

    async def Publish(
        self,
        request_iterator: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[ingest_pb2.PublishResponse]:
        """Requests arrive as bytes (see :func:`add_ingest_to_server`) so that a malformed one
        gets INVALID_ARGUMENT rather than grpc's UNKNOWN and a logged traceback."""
        try:
            grant = self._admit(context)
        except FeedError as error:
            await self._abort(context, error)
        handle = self._liveness.source(f"publish:{self._producer_name(context, grant)}")
        handle.streams += 1
        handle.connected()
        log.info("producer %s: stream opened from %s", handle.name, context.peer())
        outcome = "the producer closed its stream"
        try:
            async for raw in request_iterator:
                try:
                    request = _parse(raw)
                    await self._throttle(request, grant)
                    yield await self._store(request, grant, handle)
                except FeedError as error:
                    outcome = f"refused: {error}"[:200]
                    await self._abort(context, error)
            if await _call_was_lost(context):
                outcome = ""
        except asyncio.CancelledError:
            outcome = ""
            raise
        finally:
            log.info(
                "producer %s: stream ended: %s (%d ticks stored from it so far)",
                handle.name,
                outcome or "connection lost",
                handle.ticks,
            )
            handle.streams -= 1
            if handle.streams == 0 and not outcome:  # the connection was lost: data may be due
                handle.down("the producer's connection was lost")
            elif handle.streams == 0:  # it stopped, or made a mistake: nothing more is coming
                handle.ended(outcome)

    async def _throttle(
        self, request: ingest_pb2.PublishRequest, grant: ClientGrant | None
    ) -> None:
        """Hold a producer to its ``max_rate``: a batch over the rate waits (the producer is
        slowed, its next batch read later); one larger than a second's worth never fits and
        raises LimitExceeded."""
        if grant is None or grant.max_rate is None:
            return
        count = len(request.ticks)
        if count > grant.max_rate:
            raise LimitExceeded(
                f"ticks: a batch of {count} ticks never fits {grant.name!r}'s rate limit of "
                f"{grant.max_rate:g} ticks/s; send batches of at most {int(grant.max_rate)}"
            )
        bucket = self._buckets.get(grant.name)
        if bucket is None:
            bucket = self._buckets[grant.name] = RateBucket.full(grant.max_rate)
        delay = bucket.reserve(count)
        if delay > 0:
            await asyncio.sleep(delay)

    async def _store(
        self, request: ingest_pb2.PublishRequest, grant: ClientGrant | None, handle: SourceHandle
    ) -> ingest_pb2.PublishResponse:
        """Check size and rights, store the batch; the acknowledgement to send."""
        if self.closing or not self._hub.ready:
            raise NotReady("the feed is not accepting ticks now (starting or draining); retry")
        self._check_size(request, grant)
        if grant is not None:
            for index, draft in enumerate(request.ticks):
                if not grant.may_publish(draft.symbol):
                    raise PermissionDenied(
                        f"ticks[{index}].symbol: this token may not publish {draft.symbol!r}; "
                        "nothing of the batch was stored"
                    )
        # A draft's bytes become its tick's: fields this feed does not know (the reserved
        # sequence, offset and ingest_time numbers included) must not ride along.
        request.DiscardUnknownFields()
        result = await self._ingestor.ingest(request.ticks, handle)
        self._metrics.publish_batches.labels("stored").inc()
        self._metrics.ticks_published.inc(result.accepted)
        self._metrics.publish_duplicates.inc(result.duplicates)
        self._metrics.head_offset.set(self._hub.head_offset)
        return ingest_pb2.PublishResponse(
            batch_id=request.batch_id,
            accepted=result.accepted,
            duplicates=result.duplicates,
            last_offset=result.last_offset,
            epoch=self._hub.epoch,
        )

    def _check_size(self, request: ingest_pb2.PublishRequest, grant: ClientGrant | None) -> None:
        count = len(request.ticks)
        if count == 0:
            raise InvalidRequest("ticks: the batch is empty; send at least one tick")
        if count > self._max_batch:
            raise InvalidDraft(
                self._max_batch,
                "",
                f"the batch holds {count} ticks, over the feed's limit of {self._max_batch} "
                "(--max-batch)",
            )
        if grant is not None and grant.max_batch is not None and count > grant.max_batch:
            raise LimitExceeded(
                f"ticks: the batch holds {count} ticks, over {grant.name!r}'s limit of "
                f"{grant.max_batch}; nothing of the batch was stored"
            )

    def _admit(self, context: grpc.aio.ServicerContext) -> ClientGrant | None:
        """The caller's grant (None when the feed checks no tokens). Raises PermissionDenied
        for a token without any publish right (no token at all is refused earlier, by the
        interceptor, with UNAUTHENTICATED)."""
        if self.tokens is None:
            return None
        grant = self.tokens.lookup(context.invocation_metadata())
        if grant is None or not grant.publish:
            raise PermissionDenied("this client's token may not publish (no publish patterns)")
        return grant

    def _producer_name(self, context: grpc.aio.ServicerContext, grant: ClientGrant | None) -> str:
        if grant is not None:
            return grant.name
        for key, value in context.invocation_metadata() or ():
            if key == PRODUCER_METADATA and isinstance(value, str) and value.strip():
                return value.strip()[:MAX_PRODUCER_NAME]
        return "anonymous"

    async def _abort(self, context: grpc.aio.ServicerContext, error: FeedError) -> None:
        code = _STATUS[type(error)]
        outcome = {
            grpc.StatusCode.INVALID_ARGUMENT: "invalid",
            grpc.StatusCode.PERMISSION_DENIED: "denied",
            grpc.StatusCode.RESOURCE_EXHAUSTED: "limited",
        }.get(code, "unavailable")
        self._metrics.publish_batches.labels(outcome).inc()
        await context.abort(code, str(error))


async def _call_was_lost(context: grpc.aio.ServicerContext) -> bool:
    """After the last request: True when the call was cancelled (the producer's connection was
    lost), False when the producer half-closed its stream.

    grpc-aio ends the request iterator alike in both cases; a lost connection also ends the
    call, usually within milliseconds, but not always before the iterator ends. So wait up to
    CLOSE_SETTLE_S for that; a clean close's final status is delayed by as much.
    """
    ended = asyncio.get_running_loop().create_future()
    context.add_done_callback(lambda _: ended.done() or ended.set_result(None))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(ended), CLOSE_SETTLE_S)
    return context.cancelled() or ended.done()


def _parse(raw: bytes) -> ingest_pb2.PublishRequest:
    """Raises InvalidRequest for bytes that are not a PublishRequest."""
    try:
        return ingest_pb2.PublishRequest.FromString(raw)
    except DecodeError:
        raise InvalidRequest(
            "the request is not a tickstream.v1.PublishRequest (malformed protobuf, or a string "
            "that is not UTF-8)"
        ) from None


def add_ingest_to_server(servicer: IngestServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` as ``tickstream.v1.IngestService`` on ``server``: as the generated
    ``add_IngestServiceServicer_to_server``, except that requests reach Publish as bytes."""
    handlers = {
        "Publish": grpc.stream_stream_rpc_method_handler(
            servicer.Publish,
            request_deserializer=None,
            response_serializer=ingest_pb2.PublishResponse.SerializeToString,
        ),
    }
    service = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)
