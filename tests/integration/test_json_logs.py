"""``--log-format json``: every log line of both services is one JSON object."""

from __future__ import annotations

import json

import httpx

from tests.support import start_edge, start_feed


def test_both_services_log_one_json_object_per_line() -> None:
    feed = start_feed("--log-format", "json", "--rate", "10")
    edge = start_edge(feed.port, "--log-format", "json")
    try:
        httpx.get(f"http://127.0.0.1:{edge.port}/sse/NOPE", timeout=5)
    finally:
        edge.stop()
        feed.stop()
    for service in (feed, edge):
        records = [json.loads(line) for line in service.lines if line.strip()]
        assert records, f"{service.name} logged nothing"
        for record in records:
            assert {"asctime", "levelname", "name", "message"} <= record.keys()
        assert any("listening on" in r["message"] for r in records)
