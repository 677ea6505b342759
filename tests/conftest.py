"""Shared fixtures: real feed and edge processes on free loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.support import BTC_FILE, ETH_FILE, ServiceProcess, replay_args, start_edge, start_feed


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


def _stack(feed_args: list[str]) -> Iterator[Stack]:
    feed = start_feed(*feed_args)
    try:
        edge = start_edge(feed.port)
    except BaseException:
        feed.stop()
        raise
    try:
        yield Stack(feed, edge)
    finally:
        edge.stop()
        feed.stop()


@pytest.fixture(scope="session")
def replay_stack() -> Iterator[Stack]:
    """Both bundled real files replayed as fast as possible, once: the history is the whole
    recording (67,980 ticks), then the feed only heartbeats."""
    yield from _stack(replay_args(BTC_FILE, ETH_FILE, speed="0"))


@pytest.fixture(scope="session")
def live_stack() -> Iterator[Stack]:
    """The bundled real data replayed at 4x its recorded pace in a loop: a steady live stream."""
    yield from _stack(replay_args(BTC_FILE, ETH_FILE, speed="4", loop=True))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0), limits=limits) as client:
        yield client
