"""A clear 4xx for a request Tornado gives up on while reading it, instead of a silent close.

When a header section passes `max_header_size` (or a chunk-size line its 64 bytes),
Tornado's IOStream closes the connection before any handler runs: the client sees the
connection drop, not an answer (I1 wants a 4xx). `answer_overflows(stream)` makes that
stream write a short, fixed answer first: 431 for the header section, 400 otherwise.

The answer goes out with `Connection: close`, then the write side is shut and the unread
rest of the request is drained for a moment (a "lingering close", as nginx does): closing a
socket with unread data sends a reset, which can destroy the answer before the client
reads it. Nothing of the request is logged or echoed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import Any

from tornado.iostream import IOStream, UnsatisfiableReadError

LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024


def _answer(status: int, reason: str, error: str, message: str) -> bytes:
    body = json.dumps({"error": error, "message": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/json; charset=UTF-8\r\n"
        "Cache-Control: no-store\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        "Connection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


HEADERS_TOO_LARGE = _answer(
    431, "Request Header Fields Too Large", "headers_too_large", "The request's header section is too large."
)
MALFORMED = _answer(400, "Bad Request", "bad_request", "The request could not be read.")


class _AnsweringStream(IOStream):
    """An IOStream that answers before Tornado closes it for a request it could not read."""

    def close(self, exc_info: Any = False) -> None:
        error = exc_info[1] if isinstance(exc_info, tuple) else exc_info
        if isinstance(error, UnsatisfiableReadError) and not self.closed() and self.socket is not None:
            # Tornado reads the header section with a regex and chunk-size lines with a delimiter
            header_read = getattr(self, "_read_regex", None) is not None
            _answer_and_linger(self.socket, HEADERS_TOO_LARGE if header_read else MALFORMED)
        super().close(exc_info)


def answer_overflows(stream: IOStream) -> None:
    """Make this server-side stream answer a request it cannot read instead of dropping it."""
    if type(stream) is IOStream:
        stream.__class__ = _AnsweringStream  # only methods differ: the instance's state is unchanged


def _answer_and_linger(sock: socket.socket, answer: bytes) -> None:
    try:
        sock.send(answer)  # non-blocking; a few hundred bytes into a send buffer nothing else uses now
        sock.shutdown(socket.SHUT_WR)
        kept = sock.dup()  # the stream closes its own descriptor right after this
    except OSError:
        return
    kept.setblocking(False)
    loop = asyncio.get_running_loop()
    drained = 0

    def finish() -> None:
        with contextlib.suppress(Exception):
            loop.remove_reader(kept.fileno())
        timer.cancel()
        kept.close()

    def drain() -> None:
        nonlocal drained
        try:
            chunk = kept.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            finish()
            return
        drained += len(chunk)
        if not chunk or drained > LINGER_BYTES:
            finish()

    timer = loop.call_later(LINGER_SECONDS, finish)
    loop.add_reader(kept.fileno(), drain)
