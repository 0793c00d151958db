"""One-line structured logs on stderr, each carrying the request id.

Tornado's default access log prints the full URI, query string included, which on
OAuth routes carries codes, states and HMACs: linkd replaces it with one that logs
the path only. Nothing in linkd logs a query string, a header value or a token.

As a second line of defence every formatted line (tracebacks included) goes
through `redact`: query strings, `key=value` pairs and JSON fields with a
sensitive name, bearer credentials, and the literal values registered with
`register_secret` (the master secret, provider client secrets…) are replaced by
`[redacted]`. That covers what third-party code may log (Tornado's
`tornado.general`, asyncio's exception handler, warnings).
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tornado.web import RequestHandler

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
access_log = logging.getLogger("linkd.access")

REDACTED = "[redacted]"
_SENSITIVE = (
    r"code|state|(?:access|refresh|id)_token|token|hmac|signature|signed_request|client_secret|"
    r"code_verifier|code_challenge|appsecret_proof|secret|password|session_id|__Host-session_id|_xsrf"
)
# `?a=b&c=d` after a path or host: a query string in a URL
_QUERY = re.compile(r"(?<=[\w/.\-\]])\?[^\s\"'<>]*=[^\s\"'<>]*")
# `code=…`, `"access_token": "…"`, `'state': '…'`
_PAIR = re.compile(rf"(?i)\b({_SENSITIVE})=[^\s&\"',;]+")
_JSON_FIELD = re.compile(rf"(?i)([\"']({_SENSITIVE})[\"']\s*:\s*)([\"'])(?:\\.|(?!\3).)*\3")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
# Tornado's "Malformed HTTP message … Invalid header value '…'" quotes a raw header (an HMAC, a cookie)
_RAW_HEADER = re.compile(r"(?im)(invalid header (?:value|name))\s*(?:\S.*)?$")
MIN_SECRET_LENGTH = 6

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_literals: tuple[str, ...] = ()  # the registered secrets, longest first (kept sorted on registration)


def register_secret(*values: str | None) -> None:
    """Values that must never appear in a log line (redacted wherever they occur)."""
    global _literals
    with _secrets_lock:
        _secrets.update(v for v in values if v and len(v) >= MIN_SECRET_LENGTH)
        _literals = tuple(sorted(_secrets, key=len, reverse=True))


def redact(text: str) -> str:
    """`text` with anything that looks like, or is, a secret replaced by `[redacted]`.

    Runs on every log line (the access log included), so each pattern is only tried when
    the characters it needs are present.
    """
    for value in _literals:
        if value in text:
            text = text.replace(value, REDACTED)
    if "?" in text:
        text = _QUERY.sub("?" + REDACTED, text)
    if '"' in text or "'" in text:
        text = _JSON_FIELD.sub(lambda m: f"{m.group(1)}{m.group(3)}{REDACTED}{m.group(3)}", text)
    if "=" in text:
        text = _PAIR.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    lowered = text.lower()
    if "invalid header" in lowered:
        text = _RAW_HEADER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    if "bearer" in lowered or "basic" in lowered:
        text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return text


class KeyValueFormatter(logging.Formatter):
    """`ts=… level=… logger=… rid=… msg="…" pid=…` on one line; newlines in messages are escaped."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format in some library must not lose the event
            message = str(record.msg)
        if record.exc_info:
            message += " | " + self.formatException(record.exc_info)
        message = redact(message)
        message = message.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace('"', '\\"')
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        return (
            f"ts={ts} level={record.levelname} logger={record.name} rid={request_id.get()} "
            f'msg="{message}" pid={record.process}'
        )


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
    # Warnings and uncaught exceptions become single redacted log lines too.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_uncaught


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level)


def _log_uncaught(typ: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger("linkd").critical("uncaught %s", typ.__name__, exc_info=(typ, value, tb))


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    logging.getLogger("linkd").error(
        "uncaught %s in thread %s",
        args.exc_type.__name__,
        args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


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
