"""Every SSE event type has a JSON Schema served by the edge, and real events validate."""

from __future__ import annotations

import json

import httpx
import jsonschema

from edge_service.encoding import encode_control
from tests.conftest import Stack
from tests.support import collect


async def schemas(http: httpx.AsyncClient, base: str) -> dict[str, dict[str, object]]:
    found = {}
    for name in ("trade", "quote", "book", "bar", "reset", "status", "disconnect"):
        response = await http.get(f"{base}/schemas/{name}.json")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/schema+json"
        schema = response.json()
        jsonschema.Draft202012Validator.check_schema(schema)
        found[name] = schema
    assert (await http.get(f"{base}/schemas/nope.json")).status_code == 404
    return found


async def test_real_events_validate_against_their_schemas(
    replay_stack: Stack, http: httpx.AsyncClient
) -> None:
    base = replay_stack.base_url
    by_name = await schemas(http, base)
    checker = jsonschema.FormatChecker()
    events = await collect(
        http,
        f"{base}/sse?symbols=BTCUSDT,ETHUSDT&last_event_id=earliest",
        500,
    )
    events += await collect(
        http,
        f"{base}/sse?symbols=BTCUSDT,ETHUSDT&types=book,bar&depth=100&last_event_id=earliest",
        1_000,
        kinds=("book", "bar"),
    )
    events += await collect(
        http, f"{base}/sse/ETHUSDT?types=bar,book&snapshot=true", 3, kinds=("book", "bar")
    )
    events += await collect(
        http, f"{base}/sse/BTCUSDT?snapshot=true", 2, headers={"Last-Event-ID": "bogus"}
    )
    seen = set()
    for event in events:
        jsonschema.validate(json.loads(event.data), by_name[event.event], format_checker=checker)
        seen.add(event.event)
    assert seen == {"trade", "quote", "book", "bar", "reset"}
    for reason in ("slow_consumer", "shutdown", "feed_unavailable", "symbol_unavailable"):
        frame = encode_control("disconnect", {"reason": reason, "message": "m"}).decode()
        data = json.loads(frame.split("data: ", 1)[1].split("\n", 1)[0])
        jsonschema.validate(data, by_name["disconnect"])
    bad = {"symbol": "BTCUSDT", "sequence": "1", "offset": "1", "eventTime": "x", "ingestTime": "x"}
    try:
        jsonschema.validate({**bad, "trade": {"price": 1.5, "size": "1"}}, by_name["trade"])
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("a float price must not validate")
