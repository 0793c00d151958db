"""Run Tornado applications on loopback in a background thread, for tests.

Real sockets, real HTTP: the test talks to the server exactly as a browser or a
platform would. Each server gets its own event loop and a free port.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import tornado.httpserver
import tornado.web


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """A Tornado app served from its own thread and loop; `url` is its base URL."""

    def __init__(
        self, make_app: Callable[[], Any] | Callable[[], Awaitable[Any]], port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._make_app = make_app
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.app: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(30)
        if self._error:
            raise self._error
        return self

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced to the test by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        app = self._make_app()
        if asyncio.iscoroutine(app):
            app = await app
        self.app = app
        server = tornado.httpserver.HTTPServer(app, xheaders=False)
        server.listen(self.port, "127.0.0.1")
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        server.stop()
        await server.close_all_connections()

    def call(self, coro_factory: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Run a coroutine on the server's loop (to inspect or drive its state) and return its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro_factory(), self.loop).result(30)

    def stop(self) -> None:
        if self.loop and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)


def serve_handlers(handlers: list[Any], **settings: Any) -> ServerThread:
    """Serve a list of Tornado handlers (e.g. a provider's sandbox) on a free port."""
    return ServerThread(lambda: tornado.web.Application(handlers, **settings)).start()
