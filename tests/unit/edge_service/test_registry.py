"""StreamRegistry: release once, stuck connections dropped, jittered farewells at shutdown."""

from __future__ import annotations

import asyncio
import json

from edge_service.limits import StreamLimits
from edge_service.metrics import EdgeMetrics
from edge_service.outbox import Outbox
from edge_service.registry import StreamRegistry


class FakeSession:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


class FakeConnection:
    def __init__(self, paused_since: float | None) -> None:
        self.paused_since = paused_since
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


def registry(send_timeout: float = 5) -> StreamRegistry:
    return StreamRegistry(
        StreamLimits(),
        EdgeMetrics(),
        queue_events=100,
        queue_bytes=100_000,
        ping_interval=15,
        send_timeout=send_timeout,
        retry_ms=1000,
    )


def test_removing_a_stream_closes_its_session_and_releases_once() -> None:
    streams = registry()
    released: list[int] = []
    session = FakeSession(streams.outbox())
    stream = streams.add(session, lambda: released.append(1))
    assert len(streams) == 1
    streams.remove(stream)
    streams.remove(stream)
    assert released == [1] and session.closed == 1 and len(streams) == 0


def test_only_connections_paused_past_the_send_timeout_are_dropped() -> None:
    streams = registry(send_timeout=5)
    stuck, slow, fine = FakeConnection(100.0), FakeConnection(104.0), FakeConnection(None)
    for connection in (stuck, slow, fine):
        streams.add(FakeSession(streams.outbox()), lambda: None).connection = connection
    streams._drop_stuck(now=106.0)
    assert (stuck.aborted, slow.aborted, fine.aborted) == (True, False, False)


async def test_shutdown_ends_every_stream_with_a_jittered_retry_and_refuses_new_ones() -> None:
    streams = registry()
    sessions = [FakeSession(streams.outbox()) for _ in range(20)]
    for session in sessions:
        streams.add(session, lambda: None)
    streams.shutdown()
    finals = [s.outbox.final for s in sessions]
    assert all(f is not None and b"event: disconnect" in f for f in finals)
    retries = {int(f.split(b"retry: ")[1].split(b"\n")[0]) for f in finals if f}
    assert all(1000 <= r <= 4000 for r in retries) and len(retries) > 1, "jittered"
    data = next(line for line in finals[0].decode().splitlines() if line.startswith("data: "))  # type: ignore[union-attr]
    assert json.loads(data[6:])["reason"] == "shutdown"
    late = FakeSession(streams.outbox())
    streams.add(late, lambda: None)
    assert late.outbox.ended
    await asyncio.sleep(0)
