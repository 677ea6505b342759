"""The contracts outside Python: a Node.js gRPC subscriber on protos/ (@grpc/grpc-js with
@grpc/proto-loader) and a spec-conformant Node EventSource (the `eventsource` package)."""

from __future__ import annotations

import json
import shutil
import subprocess

import grpc
import pytest
from tickstream.v1 import feed_pb2, feed_pb2_grpc, tick_pb2

from tests.conftest import Stack
from tests.support import ROOT

NODE_DIR = ROOT / "clients" / "node"
pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_DIR / "node_modules").is_dir(),
    reason="needs node and `make node-deps` (npm ci in clients/node)",
)


def node(*args: str) -> list[dict[str, object]]:
    result = subprocess.run(
        ["node", *args], cwd=NODE_DIR, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_node_grpc_subscriber_decodes_exact_trades(replay_stack: Stack) -> None:
    ticks = node("subscribe.js", replay_stack.feed_target, "BTCUSDT", "50", "earliest")
    assert len(ticks) == 50
    assert all(t["symbol"] == "BTCUSDT" for t in ticks)
    first_trade = next(t for t in ticks if "trade" in t)
    assert first_trade["trade"] == {
        "price": "61837.63000000",
        "size": "0.02000000",
        "tradeId": "3735683259",
        "side": "SIDE_SELL",
    }
    assert first_trade["sequence"] == "1", "uint64 fields arrive exact, as strings"


def test_node_eventsource_sees_named_events_ids_and_resumes_exactly(live_stack: Stack) -> None:
    url = f"{live_stack.base_url}/sse?symbols=BTCUSDT,ETHUSDT"
    events = node("sse_check.js", url, "50")
    first = [e for e in events if e["run"] == 1]
    second = [e for e in events if e["run"] == 2]
    assert len(first) == len(second) == 50
    assert {e["type"] for e in events} <= {"trade", "quote"}
    for event in events:
        epoch, _, offset = str(event["id"]).rpartition("-")
        assert epoch and offset == event["data"]["offset"]  # type: ignore[index]
    offsets = [int(str(e["data"]["offset"])) for e in events]  # type: ignore[index]
    # Resumed, the stream continues at the very next trade or quote of the feed (books and
    # bars, not asked for, take offsets between them).
    assert offsets == sorted(set(offsets))
    wanted = [tick_pb2.TICK_TYPE_TRADE, tick_pb2.TICK_TYPE_QUOTE]
    after = feed_pb2.StreamPosition(epoch=str(first[-1]["id"]).rpartition("-")[0])
    after.offset = offsets[len(first) - 1]
    request = feed_pb2.SubscribeRequest(symbols=["BTCUSDT", "ETHUSDT"], types=wanted, after=after)
    with grpc.insecure_channel(live_stack.feed_target) as channel:
        call = feed_pb2_grpc.FeedServiceStub(channel).Subscribe(request, timeout=10)
        history: list[int] = []
        for response in call:
            history += [tick.offset for tick in response.ticks.ticks]
            if len(history) >= len(second):
                call.cancel()
                break
    assert history[: len(second)] == offsets[len(first) :]
