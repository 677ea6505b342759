"""Logging set-up for a service process: one handler on stderr, text or JSON lines, every record
passed through :class:`~tickstream_common.redaction.RedactSecrets` first."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

from .redaction import RedactSecrets

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TEXT_FORMAT_WITH_PID = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
JSON_FIELDS_WITH_PID = "%(asctime)s %(levelname)s %(name)s %(process)s %(message)s"


def log_formatter(log_format: LogFormat, with_pid: bool = False) -> logging.Formatter:
    """The formatter of ``log_format``: ``text`` lines (``TIME LEVEL LOGGER: MESSAGE``) or
    ``json`` objects (``asctime``, ``levelname``, ``name``, ``message``); ``with_pid`` adds the
    process id (``LOGGER[PID]`` in text, a ``process`` key in JSON)."""
    if log_format == "json":
        return JsonFormatter(JSON_FIELDS_WITH_PID if with_pid else JSON_FIELDS)
    return logging.Formatter(TEXT_FORMAT_WITH_PID if with_pid else TEXT_FORMAT)


def configure_logging(
    level: str, log_format: LogFormat, secrets: Iterable[str] = (), with_pid: bool = False
) -> logging.Handler:
    """Send the root logger's records at ``level`` (a level name, e.g. ``"INFO"``) and above to
    stderr in ``log_format``, bearer tokens, ``token=`` values and each of ``secrets`` masked.
    Replaces any handler configured before; returns the new handler."""
    handler = logging.StreamHandler()
    handler.setFormatter(log_formatter(log_format, with_pid))
    handler.addFilter(RedactSecrets(secrets))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    return handler
