"""Shared fixtures: real feed and edge processes on free loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.support import (
    BTC_FILE,
    ETH_FILE,
    RECORDED_TICKS,
    ServiceProcess,
    nats_url,
    replay_args,
    start_edge,
    start_feed,
    start_nats,
    wait_head,
)


@dataclass
class Stack:
    """A running feed and an edge connected to it."""

    feed: ServiceProcess
    edge: ServiceProcess

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.edge.port}"

    @property
    def feed_target(self) -> str:
        return f"127.0.0.1:{self.feed.port}"


def running_stack(feed_args: list[str], edge_args: tuple[str, ...] = ()) -> Iterator[Stack]:
    """Start a feed and an edge, yield them, stop whatever the Stack holds at the end (a test
    may have replaced a killed process with a new one)."""
    feed = start_feed(*feed_args)
    try:
        edge = start_edge(feed.port, *edge_args)
    except BaseException:
        feed.stop()
        raise
    stack = Stack(feed, edge)
    try:
        yield stack
    finally:
        stack.edge.stop()
        stack.feed.stop()


BARS = ("--bar-intervals", "1s,1m")
"""What a feed of the tests needs to make bars (start_feed turns them off otherwise)."""


@pytest.fixture(scope="session")
def replay_stack() -> Iterator[Stack]:
    """Both bundled real files replayed as fast as possible, once: the history is the whole
    recording (74,863 ticks) and its 1s and 1m bars, then the feed only heartbeats. Its
    symbols are not reported stale (a day's stale time): the tests on it are about history,
    not liveness."""
    yield from running_stack(
        [*replay_args(BTC_FILE, ETH_FILE, speed="0"), "--stale-after", "86400", *BARS]
    )


@pytest.fixture(scope="session")
def live_stack() -> Iterator[Stack]:
    """The bundled real data replayed at 4x its recorded pace in a loop: a steady live stream."""
    yield from running_stack(replay_args(BTC_FILE, ETH_FILE, speed="4", loop=True))


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One JetStream nats-server for the session's ``--backbone nats`` stacks (each uses a
    stream of its own)."""
    server = start_nats(tmp_path_factory.mktemp("jetstream"))
    yield server
    server.stop()


def nats_args(server: ServiceProcess, stream: str) -> list[str]:
    return ["--backbone", "nats", "--nats-url", nats_url(server), "--nats-stream", stream]


@pytest.fixture(scope="session")
def nats_replay_stack(nats_server: ServiceProcess) -> Iterator[Stack]:
    """:func:`replay_stack` with its feed on the JetStream backbone, yielded once the whole
    recording is in the stream (the feed is ready as soon as the replay starts)."""
    stacks = running_stack(
        [
            *replay_args(BTC_FILE, ETH_FILE, speed="0"),
            "--stale-after",
            "86400",
            *nats_args(nats_server, "REPLAY"),
        ]
    )
    stack = next(stacks)
    wait_head(stack.feed, RECORDED_TICKS)
    yield stack
    next(stacks, None)


@pytest.fixture(scope="session")
def nats_live_stack(nats_server: ServiceProcess) -> Iterator[Stack]:
    """:func:`live_stack` with its feed on the JetStream backbone."""
    yield from running_stack(
        [*replay_args(BTC_FILE, ETH_FILE, speed="4", loop=True), *nats_args(nats_server, "LIVE")]
    )


@pytest.fixture(params=["memory", "nats"])
def backbone_replay_stack(request: pytest.FixtureRequest) -> Stack:
    """:func:`replay_stack` on each backbone: the core history and exactness tests run on both."""
    name = "replay_stack" if request.param == "memory" else "nats_replay_stack"
    return request.getfixturevalue(name)


@pytest.fixture(params=["memory", "nats"])
def backbone_live_stack(request: pytest.FixtureRequest) -> Stack:
    """:func:`live_stack` on each backbone: the core resume tests run on both."""
    return request.getfixturevalue("live_stack" if request.param == "memory" else "nats_live_stack")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0), limits=limits) as client:
        yield client
