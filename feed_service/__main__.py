"""``python -m feed_service``: see ``--help``."""

from __future__ import annotations

import logging
import sys

from tickstream_common.startup import run_on_uvloop, run_service

from .config import FeedSettings
from .server import serve


def _subscriber_left(record: logging.LogRecord) -> bool:
    """Drop grpc-aio's ERROR traceback for a message that could not be sent because the
    subscriber cancelled while it was being written: an ordinary departure, not a fault."""
    return not record.getMessage().startswith("ExecuteBatchError raised in core by servicer")


def _run(settings: FeedSettings) -> int:
    logging.getLogger("grpc._cython.cygrpc").addFilter(_subscriber_left)
    return run_on_uvloop(serve(settings))


def main(argv: list[str] | None = None) -> int:
    """Parse flags and ``FEED_*`` variables, run the feed; 2 on a configuration error, 1 on an
    OS error (see :mod:`tickstream_common.startup`)."""
    return run_service("feed_service", FeedSettings, argv, _run)


if __name__ == "__main__":
    sys.exit(main())
