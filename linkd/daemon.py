"""`linkd serve`: one process serving HTTP until SIGTERM/SIGINT, then draining."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import tornado.httpserver

from .config import Settings
from .logs import setup_logging
from .service import Services, build_services
from .web import make_app

log = logging.getLogger("linkd.daemon")
MAX_BODY = 1024 * 1024
MAX_HEADERS = 16 * 1024


def make_server(app: Any) -> tornado.httpserver.HTTPServer:
    return tornado.httpserver.HTTPServer(
        app, xheaders=False, max_body_size=MAX_BODY, max_header_size=MAX_HEADERS, idle_connection_timeout=60
    )


async def run_forever(settings: Settings, extra_handlers: list[Any] | None = None) -> None:
    services: Services = await build_services(settings)
    app = make_app(services, extra_handlers)
    server = make_server(app)
    server.listen(settings.port, settings.host)
    log.info("serving on %s:%s (public URL %s)", settings.host, settings.port, settings.public_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    server.stop()
    await services.close()


def serve(settings: Settings) -> int:
    setup_logging(settings.log_level)
    asyncio.run(run_forever(settings))
    return 0
