"""``--backbone nats``: the history is one NATS JetStream stream shared by every feed replica.

Each replica keeps the in-process hub's state as a bounded cache of the stream's newest ticks,
fed by one ordered consumer, so subscribers read memory and cost JetStream nothing; its writes
go through :class:`feed_service.jetstream_writer.LogWriter`. A tick's ``offset`` is its stream
sequence, the same on every replica; the ``epoch`` is derived from the stream's name and
creation time, so it survives any feed restart and changes only when the stream is recreated.
Symbol metadata lives in the key-value bucket ``<stream>_SYMBOLS``, which every replica watches.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar
from urllib.parse import unquote

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue
from tickstream.v1 import feed_pb2, ingest_pb2

from .errors import NotReady
from .history import TickHistory
from .hub import TickHub
from .ingest import DedupWindow
from .jetstream_writer import APPEND_DEADLINE_S, DEDUP_HEADER, LogWriter
from .liveness import Liveness
from .subjects import TickSubjects, symbol_token
from .wire import StoredTick, varint

log = logging.getLogger(__name__)
T = TypeVar("T")

CATCH_UP_S = 5.0
"""How long a resume from an offset this replica has not read yet (issued by another replica)
waits for it before the subscriber is told the offset is ahead."""
CONNECT_RETRY_S = 1.0
CONSUMER_HEARTBEAT_S = 1.0
ERROR_LOG_S = 30.0
API_TIMEOUT_S = 2.0  # a JetStream API request (a leader election takes about as long)
MAX_ATOMIC_BATCH = 1_000  # nats-server's limit on one atomic batch (2.12+)
_OFFSET_KEY = b"\x18"  # Tick.offset, field 3, varint (tick.proto)


def epoch_of(info: StreamInfo) -> str:
    """16 hex digits from the stream's name and creation time: every replica derives the same,
    and only a recreated stream (a new creation time) changes it."""
    assert info.created is not None
    identity = f"{info.config.name}@{info.created.isoformat()}"
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


class JetStreamHub(TickHub):
    """A :class:`TickHub` whose ticks are numbered in, and read back from, a JetStream stream.

    ``start`` connects (retrying until a server answers), creates or updates the stream and the
    symbols bucket, reads the newest ``history_size`` ticks and follows the stream from there.
    """

    catch_up_s = CATCH_UP_S

    def __init__(
        self,
        servers: list[str],
        stream: str,
        history_size: int,
        *,
        history_age_s: float = 0.0,
        replicas: int = 1,
        liveness: Liveness | None = None,
        on_retry: Callable[[str], None] = lambda cause: None,
    ) -> None:
        super().__init__(history_size, liveness=liveness)
        self._on_retry = on_retry  # see LogWriter
        self.epoch = ""
        self._servers = servers
        self._stream = stream
        self._history_age_s = history_age_s
        self._replicas = replicas
        self.subjects = TickSubjects(stream)
        self._nc: Client | None = None
        self._writer: LogWriter | None = None
        self._kv: KeyValue | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: list[Msg] = []
        self._flush_scheduled = False
        self._closing = False
        self._quiet_until = 0.0  # connection errors are logged at most every ERROR_LOG_S
        self.dedup: DedupWindow | None = None
        """The ingest path's window: every replica learns the (symbol, dedup id) of each tick
        it reads, whoever stored it, so a batch resent through another replica, or to this one
        after a restart, is recognised (within the window and the stream's retention)."""

    async def start(self) -> None:
        """Join the stream: connect, create it if need be, load the cache and follow it. Waits
        (retrying) while no server answers or the cluster has no JetStream leader yet."""
        nc = self._nc = await self._connect()
        js = nc.jetstream(timeout=API_TIMEOUT_S)
        info = await _retrying("stream", lambda: self._ensure_stream(js))
        self.epoch = epoch_of(info)
        if info.config.max_msgs and info.config.max_msgs != self.history.capacity:
            self.history = TickHistory(info.config.max_msgs)  # the stream's limit holds
        kv = self._kv = await _retrying("symbols bucket", lambda: self._symbols_bucket(js))
        await _retrying("symbols", lambda: self._follow_symbols(kv))
        first = max(1, info.state.first_seq, info.state.last_seq - self.history.capacity + 1)
        self.history.start_at(first)
        await _retrying(
            "consumer",
            lambda: js.subscribe(
                self.subjects.wildcard,
                stream=self._stream,
                cb=self._on_message,
                ordered_consumer=True,
                # A consumer lost with its node is recreated after two missed heartbeats.
                idle_heartbeat=CONSUMER_HEARTBEAT_S,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=first
                ),
            ),
        )
        while self.head_offset < info.state.last_seq:
            await self.wait_beyond(info.state.last_seq - 1, 1.0)
        self._writer = LogWriter(nc, js, self._stream, self.subjects, self._on_retry)
        log.info(
            "backbone: stream %s (epoch %s), offsets %d..%d read, following",
            self._stream,
            self.epoch,
            self.history.earliest_offset,
            self.head_offset,
        )

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()

    async def append(self, drafts: Sequence[ingest_pb2.TickDraft], ingest_ns: int) -> int:
        """Store ``drafts`` in the stream (see :class:`LogWriter`); the last offset. This
        replica's cache receives them from the stream like any other replica's.

        JetStream stores at most MAX_ATOMIC_BATCH messages atomically, so a longer batch (only
        a built-in source's: ``--max-batch`` is held to that with this backbone) is stored as
        consecutive atomic parts."""
        if self._writer is None:
            raise RuntimeError("append before start")
        last = self.head_offset
        for start in range(0, len(drafts), MAX_ATOMIC_BATCH):
            last = await self._writer.append(drafts[start : start + MAX_ATOMIC_BATCH], ingest_ns)
        return last

    async def catch_up(self) -> None:
        """Read the stream up to its last message now (its dedup ids then in the window); at
        most APPEND_DEADLINE_S. Raises NotReady when it cannot be asked or read that far."""
        assert self._nc is not None
        try:
            info = await self._nc.jetstream(timeout=API_TIMEOUT_S).stream_info(self._stream)
        except (nats.errors.Error, OSError) as error:
            raise NotReady(f"the backbone (NATS JetStream) did not answer: {error!r}") from None
        last, deadline = info.state.last_seq, time.monotonic() + APPEND_DEADLINE_S
        while self.head_offset < last:
            if not await self.wait_beyond(last - 1, deadline - time.monotonic()):
                raise NotReady("this replica is behind the backbone's stream; retry")

    async def declare(self, infos: Iterable[feed_pb2.SymbolInfo]) -> None:
        """Declare symbols here and, through the symbols bucket, on every replica."""
        infos = list(infos)
        self.add_symbols(infos)
        if self._kv is not None:
            for info in infos:
                await self._kv.put(symbol_token(info.symbol), info.SerializeToString())

    async def _connect(self) -> Client:
        while True:
            try:
                return await nats.connect(
                    self._servers,
                    name="tickstream-feed",
                    connect_timeout=2,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    allow_reconnect=True,
                    error_cb=self._error,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                )
            except (nats.errors.Error, OSError) as error:
                log.warning("backbone: cannot reach %s (%r); retrying", self._servers, error)
                await asyncio.sleep(CONNECT_RETRY_S)

    async def _error(self, error: Exception) -> None:
        now = time.monotonic()
        if not self._closing and now >= self._quiet_until:
            self._quiet_until = now + ERROR_LOG_S
            log.warning("backbone: NATS: %r (repeats are not logged for %g s)", error, ERROR_LOG_S)

    async def _disconnected(self) -> None:
        if not self._closing:
            log.warning("backbone: disconnected from NATS; reconnecting")
            if self.on_link is not None:
                await self.on_link(False)

    async def _reconnected(self) -> None:
        log.warning("backbone: reconnected to NATS")
        if self.on_link is not None:
            await self.on_link(True)

    def _stream_config(self) -> StreamConfig:
        return StreamConfig(
            name=self._stream,
            subjects=[self.subjects.wildcard],
            max_msgs=self.history.capacity,
            max_age=self._history_age_s or None,
            storage=StorageType.FILE,
            num_replicas=self._replicas,
            allow_atomic=True,
        )

    async def _ensure_stream(self, js: JetStreamContext) -> StreamInfo:
        """The stream's info, after creating it with this feed's limits. An existing stream
        keeps its own (one replica's flags must not shrink everyone's history): a difference is
        logged, and only the atomic batches it needs are switched on."""
        config = self._stream_config()
        try:
            info = await js.stream_info(self._stream)
        except NotFoundError:
            return await js.add_stream(config)  # BadRequest if another replica was first: retried
        current = info.config
        if (current.max_msgs, current.max_age or None) != (config.max_msgs, config.max_age):
            log.warning(
                "backbone: stream %s keeps %s messages and %s s, not this feed's %s and %s s "
                "(--history-size, --history-age); change them on the stream itself",
                self._stream,
                current.max_msgs,
                current.max_age or 0,
                config.max_msgs,
                config.max_age or 0,
            )
        if not current.allow_atomic:
            current.allow_atomic = True
            info = await js.update_stream(current)
        return info

    async def _symbols_bucket(self, js: JetStreamContext) -> KeyValue:
        bucket = f"{self._stream}_SYMBOLS"
        try:
            return await js.key_value(bucket)
        except NotFoundError:
            return await js.create_key_value(bucket=bucket, replicas=self._replicas)

    async def _follow_symbols(self, kv: KeyValue) -> None:
        """Declare every symbol in the bucket, and keep declaring those added later."""
        watcher = await kv.watchall()
        while (entry := await watcher.updates(timeout=30)) is not None:
            self._declare_entry(entry)

        async def follow() -> None:
            async for entry in watcher:
                if entry is not None:
                    self._declare_entry(entry)

        self._tasks.append(asyncio.create_task(follow(), name="backbone-symbols"))

    def _declare_entry(self, entry: KeyValue.Entry) -> None:
        if entry.value:
            self.add_symbols([feed_pb2.SymbolInfo.FromString(entry.value)])

    async def _on_message(self, msg: Msg) -> None:
        """The ordered consumer's callback: gather, and store once per burst."""
        self._pending.append(msg)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Store the gathered messages as ticks (offset = stream sequence)."""
        self._flush_scheduled = False
        messages, self._pending = self._pending, []
        parse, known, of_body = self.subjects.parse, self.known_symbols, StoredTick.of_body
        ticks: list[StoredTick] = []
        head, dedup = self.head_offset, self.dedup
        for msg in messages:
            offset = msg.metadata.sequence.stream
            if offset <= head:
                continue  # already stored (a consumer reset redelivers)
            symbol, kind = parse(msg.subject)
            if symbol not in known:  # its bucket entry is still on its way
                self.add_symbols([feed_pb2.SymbolInfo(symbol=symbol)])
            ticks.append(of_body(offset, symbol, kind, msg.data + _OFFSET_KEY + varint(offset)))
            head = offset
            if dedup is not None and msg.headers and DEDUP_HEADER in msg.headers:
                dedup.add((symbol, unquote(msg.headers[DEDUP_HEADER])))
        if ticks and ticks[0].offset != self.head_offset + 1:
            log.warning(
                "backbone: offsets %d..%d were removed before this replica read them",
                self.head_offset + 1,
                ticks[0].offset - 1,
            )
            self.history.start_at(ticks[0].offset)
            self.books.forget()  # incomplete until the next book snapshot
        self.store(ticks, self.clock_ns())


async def _retrying(what: str, step: Callable[[], Awaitable[T]]) -> T:
    """``step()``'s result, trying again every CONNECT_RETRY_S while NATS refuses it."""
    while True:
        try:
            return await step()
        except (nats.errors.Error, OSError) as error:
            log.warning("backbone: %s not available yet (%r); retrying", what, error)
            await asyncio.sleep(CONNECT_RETRY_S)
