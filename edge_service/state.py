"""What the edge's routes share, built once per process in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from .auth import TokenVerifier
from .config import EdgeSettings
from .feed_client import FeedClient
from .merge import MergePool
from .metrics import EdgeMetrics
from .problems import Problem
from .registry import StreamRegistry
from .upstream import UpstreamPool

RETRY_AFTER_S = "2"


@dataclass(frozen=True, slots=True)
class EdgeState:
    """The feed connection, the shared upstreams and merges, the open streams (with the limits
    that admit them), the token verifier (None with ``--auth off``) and the metrics."""

    settings: EdgeSettings
    feed: FeedClient
    pool: UpstreamPool
    merges: MergePool
    registry: StreamRegistry
    verifier: TokenVerifier | None
    metrics: EdgeMetrics

    def require_ready(self) -> None:
        """Raises Problem 503 (with Retry-After) while the feed does not answer."""
        if not self.feed.ready:
            cause = self.feed.problem or "unavailable"
            raise Problem(
                503,
                "feed-unavailable",
                "Feed unavailable",
                f"the feed at {self.feed.target} is not ready: {cause}; retry shortly",
                headers={"Retry-After": RETRY_AFTER_S},
                feed=cause,
                feedTarget=self.feed.target,
            )


async def edge_state(request: Request) -> EdgeState:
    """The dependency the routes take their :class:`EdgeState` from (async: FastAPI runs a
    plain function dependency in a worker thread, two thread hops per stream set-up)."""
    state: EdgeState = request.state.edge
    return state
