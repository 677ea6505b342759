"""The start-up sequence of a service's ``python -m``: settings from flags and environment, then
logging, then the service, and the exit code a shell or an orchestrator reads.

Exit codes: 0 after a normal stop (SIGTERM, SIGINT), 2 for invalid configuration (found while
parsing, or a ValueError while starting), 1 for an OS error (e.g. the port is taken). Each
failure prints one line to stderr: ``<name>: invalid configuration: <why>`` or
``<name>: <error>``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol, TypeVar

import uvloop
from pydantic import ValidationError

from .logs import LogFormat, configure_logging


class ServiceSettings(Protocol):
    """What the start-up sequence reads of a service's settings."""

    @property
    def log_level(self) -> str: ...

    @property
    def log_format(self) -> LogFormat: ...


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def _no_secrets(_: Any) -> Iterable[str]:
    return ()


def run_service(
    name: str,
    settings_type: Callable[..., SettingsT],
    argv: list[str] | None,
    run: Callable[[SettingsT], int],
    secrets: Callable[[SettingsT], Iterable[str]] = _no_secrets,
) -> int:
    """Parse ``argv`` (``None``: ``sys.argv[1:]``) and the environment into ``settings_type``
    (a pydantic-settings class), configure logging from its ``log_level`` and ``log_format``
    with ``secrets(settings)`` masked, then return ``run(settings)``'s exit code, or the code of
    the error it raised (see the module docstring)."""
    try:
        settings = settings_type(_cli_parse_args=sys.argv[1:] if argv is None else argv)
    except ValidationError as error:
        return fail(name, f"invalid configuration: {one_line(error)}", 2)
    except ValueError as error:
        return fail(name, f"invalid configuration: {error}", 2)
    configure_logging(settings.log_level, settings.log_format, secrets(settings))
    return exit_code(name, lambda: run(settings))


def one_line(error: ValidationError) -> str:
    """Every problem of ``error`` as ``field: message``, joined with ``; `` (pydantic's own text
    spans lines and ends with a link)."""
    parts = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def exit_code(name: str, run: Callable[[], int]) -> int:
    """``run()``'s result; 2 on ValueError (invalid configuration), 1 on OSError, 0 on
    KeyboardInterrupt (SIGINT), each error reported in one line on stderr."""
    try:
        return run()
    except ValueError as error:  # e.g. the edge's --auth jwt without exactly one key
        return fail(name, f"invalid configuration: {error}", 2)
    except OSError as error:
        return fail(name, str(error), 1)
    except KeyboardInterrupt:
        return 0


def run_on_uvloop(main: Coroutine[Any, Any, None]) -> int:
    """Run ``main`` to its end on a uvloop event loop; 0."""
    uvloop.run(main)
    return 0


def fail(name: str, message: str, code: int) -> int:
    """Print ``<name>: <message>`` on stderr; ``code``."""
    print(f"{name}: {message}", file=sys.stderr)
    return code
