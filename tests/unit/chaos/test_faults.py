"""The chaos fault schedule (chaos.faults): replayable from its seed, one fault at a time."""

from __future__ import annotations

import itertools

from chaos.faults import plan

COUNTS = {"feed": 2, "edge": 2, "nats": 3}


def test_the_same_seed_gives_the_same_faults_and_another_seed_others() -> None:
    assert plan(7, 300, COUNTS) == plan(7, 300, COUNTS)
    assert plan(7, 300, COUNTS) != plan(8, 300, COUNTS)


def test_faults_do_not_overlap_and_end_within_the_run() -> None:
    for seed in range(20):
        faults = plan(seed, 60, COUNTS)
        assert faults, "a minute holds faults"
        for fault, after in itertools.pairwise(faults):
            assert fault.at + fault.hold < after.at
        assert faults[-1].at + faults[-1].hold <= 60
        for fault in faults:
            if fault.target:
                assert 0 <= fault.index < COUNTS[fault.target]


def test_every_kind_of_fault_is_drawn() -> None:
    kinds = {(f.action, f.target) for seed in range(5) for f in plan(seed, 300, COUNTS)}
    assert {("kill", "feed"), ("kill", "edge"), ("kill", "nats"), ("stop", "feed")} <= kinds
    assert {
        ("stop", "edge"),
        ("stop", "nats"),
        ("producer", ""),
        ("churn", ""),
        ("stall", ""),
    } <= kinds
