"""``--workers N``: N edge processes on one port, started, watched and stopped by the parent.

Each worker is a whole edge (its own app, upstreams and limits) binding the same ``host:port``
with SO_REUSEPORT, so the kernel spreads new connections over them. The parent serves nothing:
it starts the workers (multiprocessing, spawn), restarts one that dies (at most
``RESTART_LIMIT`` times in ``RESTART_WINDOW_S``: a crash loop ends the edge with exit 1 instead
of spinning), and on SIGTERM or SIGINT sends each worker SIGTERM and waits for them to drain.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType

log = logging.getLogger(__name__)

RESTART_LIMIT = 5  # restarts allowed within RESTART_WINDOW_S; one more and the edge gives up
RESTART_WINDOW_S = 60.0
DRAIN_TIMEOUT_S = 13.0  # a worker's drain: uvicorn's 10 s graceful shutdown, then the lifespan
POLL_S = 0.5  # the longest the parent waits before it looks at a stop request
CLEAN_STOPS = (0, -signal.SIGTERM)  # uvicorn re-raises the SIGTERM it drained on


def run_target(ready: Connection, target: str, *args: object) -> None:
    """In a worker process: call ``target`` (``"package.module:function"``) as
    ``function(ready, *args)``. The function sends its pid over ``ready`` once it serves, and
    returns or exits when it has stopped. Named, not passed: spawn pickles a function by its
    module's name, and that of ``python -m edge_service`` (``__main__``) is not importable."""
    module, _, name = target.partition(":")
    getattr(importlib.import_module(module), name)(ready, *args)


@dataclass
class _Worker:
    slot: int
    process: BaseProcess
    ready: Connection | None  # None once the worker has said it serves, or has died
    serving: bool = False


class RestartBudget:
    """At most ``limit`` restarts in any ``window`` seconds."""

    def __init__(self, limit: int, window: float) -> None:
        self._limit, self._window = limit, window
        self._times: deque[float] = deque()

    def take(self, now: float) -> bool:
        """Spend one restart at ``now`` (monotonic seconds); False when none is left."""
        while self._times and now - self._times[0] >= self._window:
            self._times.popleft()
        if len(self._times) >= self._limit:
            return False
        self._times.append(now)
        return True


class WorkerPool:
    """``count`` worker processes running ``target`` (see :func:`run_target`); :meth:`run`
    supervises them until a stop (SIGTERM, SIGINT or :meth:`stop`) or a failure.

    ``on_ready`` is called once, when every first worker serves. Exit codes of :meth:`run`: 0
    when every worker drained after a stop; 1 when one had to be killed or failed, or the
    restart budget ran out; a worker's own code (2: invalid configuration) when it exits
    before the pool ever served."""

    def __init__(
        self,
        count: int,
        target: str,
        args: tuple[object, ...],
        on_ready: Callable[[], None],
        *,
        budget: RestartBudget | None = None,
        drain_timeout: float = DRAIN_TIMEOUT_S,
    ) -> None:
        self._count, self._target, self._args, self._on_ready = count, target, args, on_ready
        self._budget = budget or RestartBudget(RESTART_LIMIT, RESTART_WINDOW_S)
        self._drain_timeout = drain_timeout
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, _Worker] = {}
        self._announced = False
        self._stopping = False

    def run(self) -> int:
        """Start the workers and supervise them (blocking; call from the main thread, which
        handles SIGTERM and SIGINT meanwhile); returns the exit code."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for slot in range(self._count):
                self._start(slot)
            failure = self._supervise()
            return self._drain(failure)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def stop(self) -> None:
        """Ask every worker to drain (SIGTERM) and end :meth:`run`; safe from any thread."""
        self._stopping = True
        for worker in list(self._workers.values()):
            if worker.process.exitcode is None and worker.process.pid is not None:
                os.kill(worker.process.pid, signal.SIGTERM)

    @property
    def pids(self) -> list[int]:
        """The process ids of the current workers."""
        return [w.process.pid for w in self._workers.values() if w.process.pid is not None]

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Workers get SIGTERM whatever came here: a second SIGINT would make uvicorn skip the
        # drain, and a terminal's Ctrl-C has already sent one to the whole process group.
        if not self._stopping:
            log.info("%s: stopping %d edge workers", signal.Signals(signum).name, self._count)
        self.stop()

    def _start(self, slot: int) -> None:
        if self._stopping:
            return
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=run_target,
            args=(writer, self._target, *self._args),
            name=f"edge-worker-{slot}",
            daemon=True,  # should the parent end without draining them, they are stopped too
        )
        process.start()
        writer.close()
        self._workers[slot] = _Worker(slot, process, reader)

    def _supervise(self) -> int | None:
        """Until a stop (None) or a failure (its exit code)."""
        while not self._stopping:
            workers = list(self._workers.values())
            watched = [w.process.sentinel for w in workers]
            watched += [w.ready for w in workers if w.ready is not None]
            wait(watched, timeout=POLL_S)
            for worker in workers:
                self._check_ready(worker)
                if worker.process.exitcode is not None and not self._stopping:
                    failure = self._replace(worker)
                    if failure is not None:
                        return failure
        return None

    def _check_ready(self, worker: _Worker) -> None:
        if worker.ready is None or not worker.ready.poll():
            return
        try:
            worker.ready.recv()
            worker.serving = True
        except EOFError:  # it died first: its sentinel tells
            pass
        worker.ready.close()
        worker.ready = None
        if not worker.serving:
            return
        if self._announced:
            log.info("edge worker %d (pid %s) serves", worker.slot, worker.process.pid)
        elif all(w.serving for w in self._workers.values()):
            self._announced = True
            self._on_ready()

    def _replace(self, worker: _Worker) -> int | None:
        """Restart the exited ``worker``; the exit code to end with when it may not be."""
        code, pid = worker.process.exitcode, worker.process.pid
        if worker.ready is not None:
            worker.ready.close()
            worker.ready = None
        if not self._announced:
            log.error(
                "edge worker %d (pid %s) exited with %s while starting", worker.slot, pid, code
            )
            return code if code is not None and code > 0 else 1
        if not self._budget.take(time.monotonic()):
            log.error(
                "edge worker %d (pid %s) exited with %s; too many restarts, stopping the edge",
                worker.slot,
                pid,
                code,
            )
            return 1
        log.warning("edge worker %d (pid %s) exited with %s; restarting it", worker.slot, pid, code)
        self._start(worker.slot)
        return None

    def _drain(self, failure: int | None) -> int:
        """Stop every worker, wait up to the drain timeout, kill what is left; the exit code."""
        self.stop()
        deadline = time.monotonic() + self._drain_timeout
        clean = True
        for worker in self._workers.values():
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.exitcode is None:
                log.error(
                    "edge worker %d (pid %s) still running %.0f s after SIGTERM: killed",
                    worker.slot,
                    worker.process.pid,
                    self._drain_timeout,
                )
                worker.process.kill()
                worker.process.join()
            clean = clean and worker.process.exitcode in CLEAN_STOPS
        if failure is not None:
            return failure
        return 0 if clean else 1


def stop_with_parent() -> None:
    """In a worker: SIGTERM this process (a drain) when the parent process ends, even by
    SIGKILL, so no worker outlives its supervisor. Does nothing outside a multiprocessing
    child."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        wait([sentinel])
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
