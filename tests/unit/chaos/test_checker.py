"""The chaos checker (chaos.checker) on small made-up recordings: it passes a clean one and
names each kind of broken promise."""

from __future__ import annotations

import json
from pathlib import Path

from chaos.checker import check

EPOCH = "e1"


def trade(offset: int, sequence: int, symbol: str = "BTC", trade_id: str = "") -> list[str]:
    return ["trade", f"{EPOCH}-{offset}", symbol, str(sequence), trade_id]


def write(run: Path, clients: dict[str, list[list[str]]], acked: tuple[int, int] | None = None):
    (run / "clients").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"producer_symbol": "P", "seed": 1, "faults": {}}))
    if acked is not None:
        line = {"first": acked[0], "last": acked[1], "epoch": EPOCH, "last_offset": 0}
        (run / "producer.jsonl").write_text(json.dumps(line) + "\n")
    for name, lines in clients.items():
        symbols = sorted({line[2] for line in lines if line[0] == "trade"})
        header = {"client": name, "symbols": symbols, "rated": False, "role": "live"}
        body = [header, ["open", "edge", ""], *lines]
        (run / "clients" / f"{name}.jsonl").write_text("\n".join(map(json.dumps, body)) + "\n")


def clean() -> list[list[str]]:
    return [
        trade(1, 1),
        ["quote", f"{EPOCH}-2", "BTC", "1", ""],
        trade(3, 2),
        ["mark"],
        trade(4, 3),
    ]


def test_a_clean_recording_passes(tmp_path: Path) -> None:
    write(tmp_path, {"a": clean(), "b": clean()})
    report = check(tmp_path)
    assert report.violations == []
    assert (report.clients, report.ticks) == (2, 8)


def test_a_missing_trade_is_named_by_client_symbol_and_offset(tmp_path: Path) -> None:
    gap = [trade(1, 1), trade(4, 3), ["mark"], trade(5, 4)]
    write(tmp_path, {"a": clean(), "b": gap})
    assert check(tmp_path).violations == [
        "client b: BTC trade missing: offset 3 (sequence 2); the next it got was offset 4"
    ]


def test_a_repeat_is_found(tmp_path: Path) -> None:
    write(tmp_path, {"a": [trade(1, 1), trade(1, 1), ["mark"], trade(2, 2)]})
    violations = check(tmp_path).violations
    assert any("offset 1 after 1: repeated" in v for v in violations), violations


def test_a_reset_needs_a_new_epoch_and_a_new_epoch_needs_a_reset(tmp_path: Path) -> None:
    same = [trade(1, 1), ["reset", "", EPOCH, "gap"], ["mark"], trade(9, 5)]
    silent = [trade(1, 1), ["mark"], ["trade", "e2-1", "BTC", "1", ""]]
    explained = [
        trade(1, 1),
        ["reset", "", "e2", "epoch_changed"],
        ["mark"],
        ["trade", "e2-1", "BTC", "1", ""],
    ]
    write(tmp_path, {"same": same, "silent": silent, "explained": explained})
    violations = check(tmp_path).violations
    assert [v.split(":")[0] for v in violations] == ["client same", "client silent"], violations


def test_an_acknowledged_producer_trade_must_arrive_once(tmp_path: Path) -> None:
    got = [trade(1, 1, "P", "p0"), trade(2, 2, "P", "p2"), ["mark"], trade(3, 3, "P", "p3")]
    twice = [trade(1, 1, "P", "p0"), trade(2, 2, "P", "p0"), ["mark"], trade(3, 3, "P", "p3")]
    write(tmp_path, {"got": got, "twice": twice}, acked=(0, 3))
    violations = check(tmp_path).violations
    assert "client got: P acknowledged trades never delivered: p[1]" in violations
    assert "client twice: P producer trade p0 delivered 2 times" in violations


def test_a_client_stuck_after_the_faults_fails(tmp_path: Path) -> None:
    write(tmp_path, {"a": [trade(1, 1), trade(2, 2), ["mark"]]})
    assert check(tmp_path).violations == ["client a: no tick after the faults ended for BTC: stuck"]
