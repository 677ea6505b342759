"""Fuzzing (issue 6): schemathesis generates requests from the edge's own OpenAPI document for
every non-streaming route and sends them to a real edge: none may answer 5xx. (The SSE routes'
parameter parsers are fuzzed with hypothesis in ``tests/unit/edge_service/test_parser_fuzzing.py``,
and the SSE encoder in ``tests/unit/edge_service/test_framing.py``.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.support import ServiceProcess, start_edge, start_feed


@pytest.fixture(scope="module")
def edge() -> Iterator[ServiceProcess]:
    feed = start_feed("--symbols", "AAA,BBB", "--rate", "20")
    edge = start_edge(feed.port)
    yield edge
    edge.stop()
    feed.stop()


def test_non_streaming_routes_never_answer_5xx(edge: ServiceProcess) -> None:
    base = f"http://127.0.0.1:{edge.port}"
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json").exclude(path_regex="^/sse")
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()
        checked.append(f"{operation.method.upper()} {operation.path}")

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def never_5xx(case: schemathesis.Case) -> None:
            response = case.call(timeout=10)
            if response.status_code == 503 and "Retry-After" in response.headers:
                return  # the feed briefly unavailable is a documented answer, not a fault
            case.validate_response(response, checks=[not_a_server_error])

        never_5xx()
    assert {"GET /symbols", "GET /readyz", "GET /schemas/{name}.json"} <= set(checked)
