"""The ``--workers`` supervisor: start, announce once, restart within a budget, drain on stop
(real spawned processes running the small bodies of ``worker_targets``)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_service.workers import DRAIN_TIMEOUT_S, RestartBudget, WorkerPool
from tests.support import process_alive

TARGETS = "tests.unit.edge_service.worker_targets"


def pool_of(
    count: int,
    body: str,
    *args: object,
    on_ready: Callable[[], None] = lambda: None,
    budget: RestartBudget | None = None,
    drain_timeout: float = DRAIN_TIMEOUT_S,
) -> WorkerPool:
    """A pool of ``count`` workers running ``worker_targets.<body>(ready, *args)``."""
    return WorkerPool(
        count,
        f"{TARGETS}:{body}",
        args,
        on_ready,
        budget=budget,
        drain_timeout=drain_timeout,
    )


def when(condition: Callable[[], bool], then: Callable[[], None], within: float = 20) -> None:
    """In a thread: ``then()`` once ``condition()`` holds (polled), or after ``within`` s."""

    def poll() -> None:
        deadline = time.monotonic() + within
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.05)
        then()

    threading.Thread(target=poll, daemon=True).start()


def test_restart_budget_allows_limit_restarts_per_window() -> None:
    budget = RestartBudget(2, 10.0)
    assert budget.take(0.0) and budget.take(1.0)
    assert not budget.take(5.0), "a third within 10 s"
    assert budget.take(10.5), "the first has left the window"


def test_sigterm_announces_once_stops_every_worker_and_exits_0() -> None:
    announced: list[list[int]] = []
    pool = WorkerPool(3, f"{TARGETS}:serve", (), lambda: announced.append(pool.pids))

    def terminate() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    when(lambda: bool(announced), terminate)
    before = signal.getsignal(signal.SIGTERM)
    assert pool.run() == 0
    assert len(announced) == 1 and len(set(announced[0])) == 3
    assert not [pid for pid in announced[0] if process_alive(pid)]
    assert signal.getsignal(signal.SIGTERM) is before, "the handlers are given back"


def test_a_worker_that_dies_is_restarted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pool = pool_of(1, "crash_once", str(tmp_path))
    when(lambda: (tmp_path / "restarted").exists() and len(caplog.records) >= 2, pool.stop)
    with caplog.at_level("INFO", logger="edge_service.workers"):
        assert pool.run() == 0
    assert (tmp_path / "restarted").exists()
    assert any("exited with 3; restarting it" in r.getMessage() for r in caplog.records)


def test_a_crash_loop_ends_the_pool_with_1() -> None:
    pool = pool_of(2, "crash_always", budget=RestartBudget(2, 60.0))
    started = time.monotonic()
    assert pool.run() == 1
    assert time.monotonic() - started < 30


def test_a_worker_failing_before_it_serves_gives_its_exit_code() -> None:
    assert pool_of(2, "fail_at_start").run() == 2


def test_a_worker_deaf_to_sigterm_is_killed_after_the_drain_timeout() -> None:
    pool = pool_of(1, "ignore_sigterm", on_ready=lambda: pool.stop(), drain_timeout=1.0)
    started = time.monotonic()
    assert pool.run() == 1
    assert time.monotonic() - started < 20
