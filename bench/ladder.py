"""The fan-out ladder: a server's highest offered rate that passes, found step by step.

A step passes when every client connected, p99 is within ``P99_BOUND_MS``, nothing was dropped
(no id or sequence gap or repeat, no disconnect, no client closed early or never answered) and
the server kept up: delivered events/s at least ``KEPT_UP`` of the offered rate (a server, or
its publisher, that falls behind drops nothing but does not serve the offered rate either).

Each server climbs ``STEPS`` (events/s per client) until a step fails, then bisects between its
highest pass and lowest failure (geometric mean) until they are within ``RESOLUTION`` of each
other; when the lowest step fails it halves down to ``FLOOR``. At most ``MAX_STEPS`` runs.
"""

from __future__ import annotations

import math
from typing import Any

P99_BOUND_MS = 50.0
KEPT_UP = 0.9
STEPS = (10, 25, 50, 100, 200, 340)  # x 1,000 clients: 10,000 to 340,000 events/s offered
FLOOR = 2.5
RESOLUTION = 1.25
MAX_STEPS = 9


def clean(row: dict[str, Any]) -> bool:
    """Nothing dropped: no id gap or repeat, no disconnect, every client served."""
    return not (
        row.get("id_gaps")
        or row.get("id_repeats")
        or row.get("disconnect_events")
        or row.get("closed_early")
        or row.get("never_answered")
    )


def passes(row: dict[str, Any], p99_bound_ms: float = P99_BOUND_MS) -> bool:
    """The step passed (see the module's docstring)."""
    return (
        row.get("connected") == row.get("clients")
        and 0 <= row.get("p99_ms", -1) <= p99_bound_ms
        and clean(row)
        and row.get("events_per_s", 0) >= KEPT_UP * row.get("offered_per_s", math.inf)
    )


def _between(low: float, high: float) -> float:
    middle = math.sqrt(low * high)
    return round(middle, 1) if middle < 10 else float(round(middle))


def next_rate(tried: dict[float, bool]) -> float | None:
    """The next rate to try given each rate tried so far and whether it passed; None when
    the highest passing rate is found (or none passes down to ``FLOOR``)."""
    if len(tried) >= MAX_STEPS:
        return None
    best = max((rate for rate, ok in tried.items() if ok), default=None)
    failed = [rate for rate, ok in tried.items() if not ok and (best is None or rate > best)]
    if not failed:
        higher = [step for step in STEPS if best is None or step > best]
        return float(higher[0]) if higher else None
    lowest_failure = min(failed)
    if best is None:
        lower = lowest_failure / 2
        return lower if lower >= FLOOR else None
    if lowest_failure / best <= RESOLUTION:
        return None
    return _between(best, lowest_failure)


def highest_pass(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The passing row with the highest offered rate."""
    return max(filter(passes, rows), key=lambda r: r["offered_per_s"], default=None)
