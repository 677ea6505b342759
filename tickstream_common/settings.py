"""What the two services' pydantic-settings classes declare alike: the logging settings, the
flag and environment conventions, comma-separated lists."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field
from pydantic_settings import SettingsConfigDict

from .logs import LogFormat


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
    BeforeValidator(_upper),
    Field(description="Python logging level."),
]
"""A logging level name, any case (``info`` is ``INFO``)."""

LogFormatSetting = Annotated[
    LogFormat, Field(description="Log lines as text, or one JSON object per line.")
]
"""``text`` or ``json`` (see :func:`tickstream_common.logs.log_formatter`)."""


def service_config(env_prefix: str, prog: str) -> SettingsConfigDict:
    """The conventions of both services: every field a kebab-case flag (``--log-level``) and an
    environment variable (``<env_prefix>LOG_LEVEL``); booleans as bare flags (``--loop``);
    ``prog`` in ``--help``."""
    return SettingsConfigDict(
        env_prefix=env_prefix, cli_kebab_case=True, cli_implicit_flags=True, cli_prog_name=prog
    )


def split_commas(value: Any) -> Any:
    """Split ``"A,B"`` into ``["A", "B"]`` (flags and env vars), parts trimmed and empty ones
    dropped; other values (lists) pass through unchanged."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value
