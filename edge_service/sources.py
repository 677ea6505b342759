"""The feed's sources as the edge reports them in ``/readyz``: which flow and which are down."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from tickstream.v1 import feed_pb2

LIVE_STATES = frozenset({feed_pb2.SOURCE_STATE_CONNECTED, feed_pb2.SOURCE_STATE_FLOWING})


@dataclass(frozen=True, slots=True)
class SourceReport:
    """``sources``: each source as JSON (name, state, lastTickTime, ticks, detail); ``down``:
    names of the stale and ended ones; ``ready``: some source flows, or none is stale."""

    sources: list[dict[str, Any]]
    down: list[str]
    ready: bool


def source_report(infos: Iterable[feed_pb2.SourceInfo]) -> SourceReport:
    """Judge readiness from the feed's ``ListSources``.

    A stale source (connection lost, or silent past its stale time) makes the edge unready
    unless another source flows; an ended one (a finished replay, a producer that closed its
    stream) is listed as down but does not: it stopped on purpose. No sources at all (a
    producers-only feed before any producer connects) is ready.
    """
    infos = list(infos)
    down = [i.name for i in infos if i.state not in LIVE_STATES]
    flowing = any(i.state in LIVE_STATES for i in infos)
    stale = any(i.state == feed_pb2.SOURCE_STATE_STALE for i in infos)
    sources = [{**json_format.MessageToDict(i), "state": _state_name(i.state)} for i in infos]
    return SourceReport(sources, down, flowing or not stale)


def _state_name(state: int) -> str:
    return feed_pb2.SourceState.Name(state).removeprefix("SOURCE_STATE_").lower()
