"""The example alert rules and Grafana dashboard in ``deploy/`` (issue 14) use only series that a
running feed and edge export: every ``tickstream_*`` name in their expressions, every label
their selectors match on and every value they name (``state!="live"`` on a gauge whose states
are ``flowing``, ``stale``... would match the healthy series) is found in the scraped
``/metrics`` of real processes."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest
import yaml

from tests.support import ROOT, ServiceProcess, collect, services, start_edge, start_feed

RULES = ROOT / "deploy" / "prometheus-alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ")
PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
LITERALS = re.compile(r"^[A-Za-z0-9_.:-]+(\|[A-Za-z0-9_.:-]+)*$")
SELECTOR = re.compile(r"\b(tickstream_[a-z0-9_]+)(?:\{([^}]*)\})?")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


Exported = dict[str, dict[str, set[str]]]
"""sample name -> label name -> the values it takes"""


def scrape(url: str, into: Exported) -> None:
    """Add each sample name of ``url`` with its labels and their values to ``into``."""
    for line in httpx.get(url, timeout=5).text.splitlines():
        match = SAMPLE.match(line)
        if match and not line.startswith("#"):
            labels = into.setdefault(match[1], {})
            for label, value in PAIR.findall(match[2] or ""):
                labels.setdefault(label, set()).add(value)


def rule_expressions() -> list[str]:
    rules = yaml.safe_load(RULES.read_text("utf-8"))
    expressions = []
    for group in rules["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert rule["alert"] and rule["expr"], rule
            assert rule["labels"]["severity"] in ("page", "warn", "info"), rule
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule
            expressions.append(str(rule["expr"]))
    return expressions


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text("utf-8"))
    assert dashboard["uid"] == "tickstream" and dashboard["panels"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def missing_from(expression: str, exported: Exported) -> list[str]:
    """What ``expression`` names that no scraped sample has: series, labels of a series, or
    values of a label (each literal of a matcher, ``=``, ``!=`` or an alternation)."""
    problems = []
    names = []
    for name, matchers in SELECTOR.findall(expression):
        names.append(name)
        if name not in exported:
            problems.append(f"series {name}")
            continue
        for label, _, value in MATCHER.findall(matchers):
            if label not in exported[name]:
                problems.append(f"label {label} of {name}")
            elif LITERALS.match(value):
                unknown = sorted(set(value.split("|")) - exported[name][label])
                problems += [f"value {label}={v!r} of {name}" for v in unknown]
    for grouping in GROUPING.findall(expression):
        for label in (part.strip() for part in grouping.split(",")):
            if label in ("le", "instance", "job", ""):
                continue  # le: every histogram bucket; instance, job: added by Prometheus
            if not any(label in exported.get(name, {}) for name in names):
                problems.append(f"label {label} grouped on in {names}")
    return problems


@pytest.fixture(scope="module")
def exported() -> Exported:
    """The samples of a feed (synthetic symbols, client tokens required) and of its edge after
    a stream ran, with their label names."""
    feed = start_feed("--symbols", "AAA,BBB", "--rate", "20")
    edge: ServiceProcess = start_edge(feed.port)
    found: Exported = {}
    with services(feed, edge):

        async def one_stream() -> None:
            async with httpx.AsyncClient(timeout=10) as http:
                await collect(http, f"http://127.0.0.1:{edge.port}/sse?symbols=AAA", 5)

        asyncio.run(one_stream())
        scrape(f"http://127.0.0.1:{feed.metrics_port}/metrics", found)
        scrape(f"http://127.0.0.1:{edge.port}/metrics", found)
    return found


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_series_label_and_value_used_exists(source: str, exported: Exported) -> None:
    wrong = 'sum by (x) (tickstream_nope{a="1"}) + tickstream_feed_head_offset{b="2"}'
    assert missing_from(wrong, exported) == [
        "series tickstream_nope",
        "label b of tickstream_feed_head_offset",
        "label x grouped on in ['tickstream_nope', 'tickstream_feed_head_offset']",
    ], "the check itself can fail"
    assert missing_from('tickstream_feed_sources{state!="live"}', exported) == [
        "value state='live' of tickstream_feed_sources"
    ]
    expressions = rule_expressions() if source == "rules" else dashboard_expressions()
    assert len(expressions) >= 10
    problems = {e: p for e in expressions if (p := missing_from(e, exported))}
    assert not problems, json.dumps(problems, indent=1)
    used = {name for e in expressions for name, _ in SELECTOR.findall(e)}
    print(f"{source}: {len(expressions)} expressions over {len(used)} series, all exported")
