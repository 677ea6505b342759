"""The benchmark's C load client (``bench/sseload.c``) reads real edge streams correctly: every
event counted once, ids contiguous, latency read from ``ingestTime``. Its figures are what
``make bench`` reports, so it is checked here for behaviour (never for speed)."""

from __future__ import annotations

import json
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import running_stack

SOURCE = Path(__file__).resolve().parents[2] / "bench" / "sseload.c"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build bench/sseload.c")
def test_load_client_counts_every_event_once_with_contiguous_ids(tmp_path: Path) -> None:
    binary = tmp_path / "sseload"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(SOURCE)], check=True)
    feed_args = ["--symbols", "BENCH", "--rate", "200", "--bar-intervals", ""]  # ids contiguous
    with contextmanager(running_stack)(feed_args) as stack:
        port = str(stack.edge.port)
        args = [str(binary), "127.0.0.1", port, "/sse/BENCH", "5", "2", "--warmup", "0.5"]
        result = subprocess.run(
            [*args, "--check-ids"], capture_output=True, text=True, timeout=60, check=True
        )
    assert result.stderr.startswith("ready 5")
    figures = json.loads(result.stdout)
    assert figures["connected"] == 5 and figures["clients_with_no_events"] == 0
    # 200 ticks/s for 2 s to 5 clients: about 2,000 events, none lost or repeated.
    assert 1_000 < figures["events"] < 3_000
    assert figures["id_gaps"] == 0 and figures["id_repeats"] == 0
    assert figures["latency_samples"] == figures["events"]
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
