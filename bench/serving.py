"""Serve one Tornado app on 127.0.0.1 until SIGTERM or SIGINT: the benchmark's own servers."""

from __future__ import annotations

import asyncio
import signal

import tornado.httpserver
import tornado.web


async def serve_until_stopped(app: tornado.web.Application, port: int, ready_line: str | None = None) -> None:
    """Listen, print `ready_line` once listening (the runner waits for it), stop on a signal."""
    server = tornado.httpserver.HTTPServer(app)
    server.listen(port, "127.0.0.1")
    if ready_line is not None:
        print(ready_line, flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()
