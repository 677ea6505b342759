"""Acceptance 5: a client with no generated code subscribes using server reflection only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_reflection.v1alpha import reflection_pb2

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


def test_reflection_answers_under_its_v1_name_too(replay_stack: Stack) -> None:
    """Tools that try ``grpc.reflection.v1`` first (grpcurl, Postman) get the same answers: the
    services, and the file declaring FeedService (issue 14)."""
    with grpc.insecure_channel(replay_stack.feed_target) as channel:
        call = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="tickstream.v1.FeedService"
            ),
        ]
        listed, described = list(call(iter(requests), timeout=10))
    names = {service.name for service in listed.list_services_response.service}
    assert {"tickstream.v1.FeedService", "grpc.reflection.v1.ServerReflection"} <= names
    assert "grpc.reflection.v1alpha.ServerReflection" in names
    assert described.file_descriptor_response.file_descriptor_proto
