"""``python -m feed_service``: see ``--help``."""

from __future__ import annotations

import logging
import sys

import uvloop
from pydantic import ValidationError
from pythonjsonlogger.json import JsonFormatter

from .config import FeedSettings
from .server import serve

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _subscriber_left(record: logging.LogRecord) -> bool:
    """Drop grpc-aio's ERROR traceback for a message that could not be sent because the
    subscriber cancelled while it was being written: an ordinary departure, not a fault."""
    return not record.getMessage().startswith("ExecuteBatchError raised in core by servicer")


def main(argv: list[str] | None = None) -> int:
    """Parse flags and ``FEED_*`` variables, run the feed; 2 on a configuration error."""
    try:
        settings = FeedSettings(_cli_parse_args=sys.argv[1:] if argv is None else argv)
    except (ValidationError, ValueError) as error:
        print(f"feed_service: invalid configuration: {error}", file=sys.stderr)
        return 2
    handler = logging.StreamHandler()
    fields = "%(asctime)s %(levelname)s %(name)s %(message)s"
    json_lines = settings.log_format == "json"
    handler.setFormatter(JsonFormatter(fields) if json_lines else logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    logging.getLogger("grpc._cython.cygrpc").addFilter(_subscriber_left)
    try:
        uvloop.run(serve(settings))
    except ValueError as error:
        print(f"feed_service: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"feed_service: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
