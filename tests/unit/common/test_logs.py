"""Log set-up: one stderr handler, text or JSON lines, optional pid, secrets masked."""

from __future__ import annotations

import json
import logging
import os

import pytest

from tickstream_common.logs import configure_logging
from tickstream_common.redaction import MASK


def emit(capsys: pytest.CaptureFixture[str], message: str, *args: object) -> str:
    logging.getLogger("svc.part").warning(message, *args)
    return capsys.readouterr().err


def test_text_lines_name_level_logger_and_message(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "text")
    line = emit(capsys, "listening on %s:%d", "127.0.0.1", 8000)
    assert line.rstrip("\n").endswith(" WARNING svc.part: listening on 127.0.0.1:8000")
    assert logging.getLogger().level == logging.INFO


def test_text_lines_with_pid(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "text", with_pid=True)
    assert f" svc.part[{os.getpid()}]: hello" in emit(capsys, "hello")


def test_json_lines_are_objects_with_the_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json", with_pid=True)
    record = json.loads(emit(capsys, "n=%d", 3))
    assert {"asctime", "levelname", "name", "message"} <= record.keys()
    assert record["message"] == "n=3" and record["process"] == os.getpid()


def test_secrets_and_tokens_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "text", secrets=["hunter2"])
    line = emit(capsys, "key %s header %s", "hunter2", "Bearer abc.def")
    assert "hunter2" not in line and "abc.def" not in line and line.count(MASK) == 2


def test_level_filters_and_a_second_call_replaces_the_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "text")
    configure_logging("ERROR", "text")
    assert emit(capsys, "only a warning") == ""
    logging.getLogger("svc").error("once")
    assert capsys.readouterr().err.count("once") == 1
