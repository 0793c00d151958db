"""`linkd serve`: a supervisor process and its workers, the way systemd wants a daemon.

The main process (the supervisor) validates the configuration, binds the listening
socket (or takes the one systemd passed), then forks `LINKD_WORKERS` workers. Each
worker builds its own services (store connections, HTTP client) inside its own
event loop, so no SQLite connection or loop ever crosses a fork, and nothing is
exec'd: secrets never reach a child's environment or argv. The supervisor stays
single-threaded and never serves; it is the only process that speaks sd_notify
(`NotifyAccess=main`): READY=1 once every worker has opened the databases and
serves the socket, WATCHDOG=1 only while every worker's event loop beats on its
pipe, STOPPING=1 on SIGTERM/SIGINT, which it forwards. A dead worker is replaced.

A worker drains on SIGTERM: it stops accepting, lets in-flight requests finish up
to `LINKD_SHUTDOWN_TIMEOUT`, closes what is left and then the databases. Tornado's
`close_all_connections()` alone would cut requests in flight, hence `DrainingHTTPServer`.
Worker 0 alone runs the housekeeping (purge of expired rows, background token refresh).

The pieces: `supervisor.py` (the main process: forks, watches, speaks sd_notify),
`worker.py` (one serving event loop and its housekeeping), `draining.py` (the HTTP
server that drains). This module is the entry point: it validates the configuration,
binds, and hands the sockets to the supervisor.

The internal API gets a listener of its own when `LINKD_API_PORT` is set (on
`LINKD_API_HOST`, default `LINKD_HOST`), so it can stay on loopback while the OAuth
routes face the internet. That socket is always bound here, also under socket
activation: systemd passes the public listener only.
"""

from __future__ import annotations

import logging
import socket
import urllib.parse
from typing import Any

import tornado.netutil

from .config import Settings
from .draining import DrainingHTTPServer, make_server
from .logs import register_secret, setup_logging
from .registry import Registry
from .service import discover
from .supervisor import KILL_GRACE, Supervisor
from .systemd import listen_sockets
from .worker import Reload, Worker

log = logging.getLogger("linkd.daemon")

__all__ = [
    "KILL_GRACE",
    "DrainingHTTPServer",
    "Supervisor",
    "Worker",
    "bind",
    "bind_api",
    "make_server",
    "protect_secrets",
    "run_forever",
    "serve",
]


def protect_secrets(settings: Settings, registry: Registry | None = None) -> None:
    """Register every secret value the settings hold, so no log line can ever carry one."""
    register_secret(settings.secret, *settings.previous_secrets, settings.api_token, settings.database_url)
    if settings.database_url:  # the password alone too, wherever a driver message might quote it
        register_secret(urllib.parse.unquote(urllib.parse.urlsplit(settings.database_url).password or ""))
    registry = registry or discover(settings)[1]
    for entry in registry.entries.values():
        for setting in entry.cls.settings:
            if setting.secret:
                register_secret(*str(settings.env.get(setting.name, "")).split(","))


def bind(settings: Settings) -> list[socket.socket]:
    """The sockets systemd passed (socket activation), else freshly bound ones."""
    return listen_sockets() or tornado.netutil.bind_sockets(settings.port, settings.host)


def bind_api(settings: Settings) -> list[socket.socket]:
    """The internal API's own listening sockets when `LINKD_API_PORT` is set, else none.

    Bound here even under socket activation (systemd passes the public listener only);
    the host defaults to `LINKD_HOST` when only the port is given.
    """
    if not settings.api_port:
        return []
    return tornado.netutil.bind_sockets(settings.api_port, settings.api_host or settings.host)


async def run_forever(settings: Settings, extra_handlers: list[Any] | None = None) -> None:
    """One process, one loop, no supervisor (used by `linkd demo`): serve until SIGTERM/SIGINT."""
    protect_secrets(settings)
    await Worker(settings, bind(settings), extra_handlers, api_sockets=bind_api(settings)).run()


def serve(settings: Settings, reload: Reload | None = None) -> int:
    """`linkd serve`: validate, bind, supervise the workers; 0 after a clean stop.

    `reload`, when given, re-reads the settings on SIGHUP (only the log level is applied).
    """
    setup_logging(settings.log_level)
    _, registry = discover(settings)
    registry.check(settings)  # ConfigError → exit status 2, before anything is bound or forked
    protect_secrets(settings, registry)
    try:
        sockets = bind(settings)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc.strerror or exc)
        return 1
    try:
        api_sockets = bind_api(settings)
    except OSError as exc:
        host = settings.api_host or settings.host
        log.error("cannot listen on %s:%s for the API: %s", host, settings.api_port, exc.strerror or exc)
        for sock in sockets:
            sock.close()
        return 1
    return Supervisor(settings, sockets, reload, api_sockets).run()
