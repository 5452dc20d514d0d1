"""The log line format of the service, shared by its processes."""

from __future__ import annotations

import logging
import sys

#: Format of the service's log lines: time, level, logger, process id and message.
#: The process id distinguishes the request processes of `serve --workers N`.
SERVICE_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s"
#: Loggers whose levels a child process of the service takes over from its parent.
SERVICE_LOGGERS = ("healthscore", "healthscore.service")


def add_plain_handler() -> None:
    """Log healthscore's records to stderr in SERVICE_LOG_FORMAT, unless set up."""
    package = logging.getLogger("healthscore")
    if package.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(SERVICE_LOG_FORMAT))
    package.addHandler(handler)


def logger_levels() -> dict[str, int]:
    """Return the levels of SERVICE_LOGGERS, to hand to a child process."""
    return {name: logging.getLogger(name).level for name in SERVICE_LOGGERS}


def set_logger_levels(levels: dict[str, int]) -> None:
    """Set the levels that `logger_levels` returned in the parent process."""
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
