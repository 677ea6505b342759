"""Acceptance 5: a client with no generated code subscribes using server reflection only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import Stack

CLIENT = Path(__file__).with_name("reflection_client.py")


def test_reflection_only_client_decodes_ticks(replay_stack: Stack) -> None:
    result = subprocess.run(
        [sys.executable, str(CLIENT), replay_stack.feed_target, "BTCUSDT", "100"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=CLIENT.parent,  # not the repo root: nothing of ours is importable by accident
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    services = lines[0]["services"]
    assert "tickstream.v1.FeedService" in services
    assert "grpc.health.v1.Health" in services
    ticks = lines[1:]
    assert len(ticks) == 100
    assert {tick["symbol"] for tick in ticks} == {"BTCUSDT"}
    assert [int(tick["offset"]) for tick in ticks] == sorted(int(t["offset"]) for t in ticks)
    first_trade = next(tick["trade"] for tick in ticks if "trade" in tick)
    assert first_trade == {
        "price": "61837.63000000",
        "size": "0.02000000",
        "tradeId": "3735683259",
        "side": "SIDE_SELL",
    }
