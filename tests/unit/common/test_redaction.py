"""Secrets are masked in log records (issue 6)."""

from __future__ import annotations

import io
import logging

from hypothesis import given
from hypothesis import strategies as st

from tickstream_common.redaction import MASK, RedactSecrets, redact

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def test_tokens_in_headers_queries_cookies_and_configured_secrets_are_masked() -> None:
    line = (
        f"GET /sse/BTCUSDT?symbols=A&token={TOKEN}&x=1 Authorization: Bearer {TOKEN} "
        f"cookie tickstream_token={TOKEN}; feed secret hunter2-secret"
    )
    masked = redact(line, ["hunter2-secret"])
    assert TOKEN not in masked and "hunter2-secret" not in masked
    assert masked.count(MASK) == 4 and "&x=1" in masked and "symbols=A" in masked


@given(
    st.text(
        alphabet=st.characters(
            blacklist_characters="&; \"'\n\t\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\u2028\u2029"
        ),
        min_size=1,
    )
)
def test_any_query_token_value_is_masked(value: str) -> None:
    if any(c.isspace() for c in value):
        return
    assert redact(f"/sse?a=1&token={value}") == f"/sse?a=1&token={MASK}"


def logged(formatter: logging.Formatter, secret: str) -> str:
    """What a handler with ``formatter`` and the redaction filter prints for a warning with a
    token and ``secret`` as arguments and an exception quoting both."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RedactSecrets([secret]))
    log = logging.getLogger(f"redaction-test-{type(formatter).__name__}")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("client sent %s with %s", f"Bearer {TOKEN}", secret)
        try:
            raise ValueError(f"bad header Authorization: Bearer {TOKEN} token={TOKEN} {secret}")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    return stream.getvalue()


def test_filter_masks_arguments_and_tracebacks() -> None:
    text = logged(logging.Formatter(), "s3cret")
    assert TOKEN not in text and "s3cret" not in text
    assert "ValueError" in text and MASK in text


def test_json_log_lines_carry_the_masked_traceback() -> None:
    from pythonjsonlogger.json import JsonFormatter

    text = logged(JsonFormatter("%(levelname)s %(message)s"), "s3cret")
    assert TOKEN not in text and "s3cret" not in text
    assert "ValueError" in text and MASK in text
