"""Secrets never reach the logs: a logging filter that masks bearer tokens, ``token=`` query
values and configured secrets in every record before it is formatted."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "[redacted]"
_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)((?:^|[?&\s\"'])token=)[^&\s\"']+"),
    re.compile(r"(?i)(tickstream_token=)[^;\s\"']+"),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with bearer tokens, ``token=`` values, the token cookie and each of ``secrets``
    replaced by ``[redacted]``."""
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


class RedactSecrets(logging.Filter):
    """Rewrites each record's message (arguments merged in) with :func:`redact`, exception text
    included, so no handler or formatter ever sees a secret."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self._secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self._secrets)
        # Formatters that render exc_info themselves (python-json-logger) get the masked text.
        record.exc_info = None
        return True
