"""The start-up sequence: settings, logging, run, exit code and the one-line error report."""

from __future__ import annotations

import logging
from typing import Literal

import pytest
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from tickstream_common.startup import exit_code, run_on_uvloop, run_service


class DemoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_", cli_kebab_case=True)

    port: int = Field(1, ge=0)
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    secret: SecretStr | None = None


def test_settings_reach_run_and_its_code_is_returned() -> None:
    seen: list[DemoSettings] = []

    def run(settings: DemoSettings) -> int:
        seen.append(settings)
        return 0

    assert run_service("demo", DemoSettings, ["--port", "7"], run) == 0
    assert seen[0].port == 7


def test_invalid_flags_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_service("demo", DemoSettings, ["--port", "-1"], lambda _: 0) == 2
    err = capsys.readouterr().err
    assert err.startswith("demo: invalid configuration: ") and "port" in err


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_PORT", "9")
    assert run_service("demo", DemoSettings, [], lambda settings: settings.port) == 9


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (ValueError("no key"), 2, "demo: invalid configuration: no key\n"),
        (OSError(98, "Address already in use"), 1, "demo: [Errno 98] Address already in use\n"),
        (KeyboardInterrupt(), 0, ""),
    ],
)
def test_errors_map_to_exit_codes(
    capsys: pytest.CaptureFixture[str], error: BaseException, code: int, line: str
) -> None:
    def run() -> int:
        raise error

    assert exit_code("demo", run) == code
    assert capsys.readouterr().err == line


def test_logging_is_configured_with_the_secrets_masked(capsys: pytest.CaptureFixture[str]) -> None:
    def run(settings: DemoSettings) -> int:
        logging.getLogger("demo").warning("the secret is %s", "s3cr3t")
        return 0

    def secrets(settings: DemoSettings) -> list[str]:
        return [settings.secret.get_secret_value()] if settings.secret else []

    run_service("demo", DemoSettings, ["--secret", "s3cr3t", "--log-format", "json"], run, secrets)
    err = capsys.readouterr().err
    assert '"message": "the secret is [redacted]"' in err and "s3cr3t" not in err


def test_run_on_uvloop_runs_the_coroutine_to_its_end() -> None:
    done: list[bool] = []

    async def main() -> None:
        done.append(True)

    assert run_on_uvloop(main()) == 0 and done == [True]
