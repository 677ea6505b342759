"""Issue 14: the chaos run's short form and its broken build, both through ``python -m
chaos.run`` as ``make chaos`` runs it (real nats-servers, feeds, edges, producer and 200 SSE
clients on loopback; the fault schedule from a fixed seed)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT


def chaos(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "chaos.run", "--dir", str(tmp_path / "run"), *args]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )
    print(result.stdout[-6000:], result.stderr[-3000:])
    return result


@pytest.mark.timeout(300)
def test_a_minute_of_faults_loses_repeats_and_misorders_nothing(tmp_path: Path) -> None:
    result = chaos(tmp_path, "--seed", "11", "--duration", "60", "--clients", "200")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary = re.search(
        r"faults injected (\d+).*\n.*ticks checked (\d+).*violations (\d+)", result.stdout
    )
    assert summary is not None, result.stdout
    faults, ticks, violations = map(int, summary.groups())
    assert faults >= 8 and ticks > 100_000 and violations == 0


@pytest.mark.timeout(200)
def test_the_checker_catches_an_edge_that_drops_one_trade(tmp_path: Path) -> None:
    result = chaos(
        tmp_path, "--seed", "5", "--duration", "8", "--clients", "40", "--drop-trade", "60"
    )
    assert result.returncode == 1, result.stdout[-4000:]
    named = re.findall(
        r"VIOLATION client (c\d+): (\w+) trade missing: offset (\d+) \(sequence \d+\)",
        result.stdout,
    )
    assert named, result.stdout
    offsets = {offset for _, _, offset in named}
    assert len(offsets) == 1, f"one dropped trade, named by its offset: {named}"
