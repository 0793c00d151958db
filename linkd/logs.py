"""One-line structured logs on stderr, each carrying the request id.

Tornado's default access log prints the full URI, query string included, which on
OAuth routes carries codes, states and HMACs: linkd replaces it with one that logs
the path only. Nothing in linkd logs a query string, a header value or a token.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tornado.web import RequestHandler

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
access_log = logging.getLogger("linkd.access")


class KeyValueFormatter(logging.Formatter):
    """`ts=… level=… logger=… rid=… msg="…"` on one line; newlines in messages are escaped."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += " | " + self.formatException(record.exc_info)
        message = message.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        return f'ts={ts} level={record.levelname} logger={record.name} rid={request_id.get()} msg="{message}"'


def setup_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root.addHandler(handler)
    set_level(level)
    # Tornado's own access logger would print query strings: silence it for good.
    logging.getLogger("tornado.access").disabled = True


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level)


def log_request(handler: RequestHandler) -> None:
    """The access log line: method, path without query, status, duration."""
    status = handler.get_status()
    request = handler.request
    level = logging.INFO if status < 500 else logging.ERROR
    access_log.log(
        level,
        "%s %s %d %.1fms",
        request.method,
        request.path,
        status,
        1000.0 * request.request_time(),
    )
