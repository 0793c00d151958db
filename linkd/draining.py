"""`DrainingHTTPServer`: a Tornado HTTPServer that can stop without cutting requests in flight.

Tornado's `close_all_connections()` alone would cut them; `drain()` stops accepting,
waits up to a deadline for the requests that already began, then closes the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import tornado.httpserver
import tornado.httputil
import tornado.iostream

from .overflow import answer_overflows

MAX_BODY = 1024 * 1024
MAX_HEADERS = 16 * 1024


class DrainingHTTPServer(tornado.httpserver.HTTPServer):
    """An HTTPServer that knows which connections have a request in flight, so it can drain.

    A connection is busy from the moment a request's headers arrive until Tornado
    starts reading its next request (the response is then fully written) or the
    connection closes; both moments reach us through the public delegate interface.
    """

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self._busy: dict[object, tornado.httputil.HTTPConnection] = {}
        self._draining = False
        self._changed: asyncio.Event | None = None

    @property
    def in_flight(self) -> int:
        return len(self._busy)

    def handle_stream(self, stream: tornado.iostream.IOStream, address: tuple[Any, ...]) -> None:
        answer_overflows(stream)  # a header section over MAX_HEADERS gets a 431, not a silent close
        super().handle_stream(stream, address)

    def start_request(
        self, server_conn: object, request_conn: tornado.httputil.HTTPConnection
    ) -> tornado.httputil.HTTPMessageDelegate:
        self._finished(server_conn)
        return _Tracked(self, server_conn, request_conn, super().start_request(server_conn, request_conn))

    def on_close(self, server_conn: object) -> None:
        self._finished(server_conn)
        super().on_close(server_conn)

    def _began(self, server_conn: object, request_conn: tornado.httputil.HTTPConnection) -> None:
        self._busy[server_conn] = request_conn
        if self._draining:
            _close_after_response(request_conn)

    def _finished(self, server_conn: object) -> None:
        if self._busy.pop(server_conn, None) is not None and self._changed is not None:
            self._changed.set()

    async def drain(self, timeout: float) -> tuple[int, int]:
        """Stop accepting, wait up to `timeout` s for requests in flight, close every connection.

        Returns (requests in flight when draining began, requests cut at the deadline).
        """
        self.stop()
        self._draining = True
        waiting = len(self._busy)
        for request_conn in self._busy.values():
            _close_after_response(request_conn)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._busy and loop.time() < deadline:
            self._changed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), deadline - loop.time())
        cut = len(self._busy)
        await self.close_all_connections()  # idle keep-alive ones, and whatever outlived the deadline
        return waiting, cut


def _close_after_response(request_conn: tornado.httputil.HTTPConnection) -> None:
    """Answer with `Connection: close` and close after it (Tornado has no public switch for this)."""
    if hasattr(request_conn, "_disconnect_on_finish"):
        request_conn._disconnect_on_finish = True


class _Tracked(tornado.httputil.HTTPMessageDelegate):
    """Passes a request through to the application, telling the server when it really started."""

    def __init__(
        self,
        server: DrainingHTTPServer,
        server_conn: object,
        request_conn: tornado.httputil.HTTPConnection,
        inner: tornado.httputil.HTTPMessageDelegate,
    ) -> None:
        self.server = server
        self.server_conn = server_conn
        self.request_conn = request_conn
        self.inner = inner

    def headers_received(
        self,
        start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
        headers: tornado.httputil.HTTPHeaders,
    ) -> Any:
        self.server._began(self.server_conn, self.request_conn)
        return self.inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        self.inner.finish()

    def on_connection_close(self) -> None:
        self.inner.on_connection_close()


def make_server(app: Any) -> DrainingHTTPServer:
    return DrainingHTTPServer(
        app, xheaders=False, max_body_size=MAX_BODY, max_header_size=MAX_HEADERS, idle_connection_timeout=60
    )
