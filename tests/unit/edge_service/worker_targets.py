"""Bodies for the worker processes of tests/unit/edge/test_workers.py (spawn imports them by
name, so they live in a module of their own)."""

from __future__ import annotations

import os
import signal
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path


def serve(ready: Connection) -> None:
    """Say it serves, then sleep until a signal ends the process."""
    ready.send(os.getpid())
    time.sleep(60)


def ignore_sigterm(ready: Connection) -> None:
    """Serve, deaf to SIGTERM: only a kill ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(ready)


def crash_once(ready: Connection, folder: str) -> None:
    """The first run serves for a moment and exits 3; later runs note ``restarted`` in
    ``folder`` and serve."""
    crashed, restarted = Path(folder) / "crashed", Path(folder) / "restarted"
    if crashed.exists():
        restarted.touch()
        serve(ready)
        return
    crashed.touch()
    ready.send(os.getpid())
    time.sleep(0.3)
    sys.exit(3)


def crash_always(ready: Connection) -> None:
    """Serve for a moment, then exit 3."""
    ready.send(os.getpid())
    time.sleep(0.3)
    sys.exit(3)


def fail_at_start(_ready: Connection) -> None:
    """Exit 2 (invalid configuration) before serving."""
    sys.exit(2)
