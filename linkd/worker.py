"""One serving event loop: a worker of `linkd serve`, or the whole of `linkd demo`.

A worker drains on SIGTERM: it stops accepting, lets in-flight requests finish up
to `LINKD_SHUTDOWN_TIMEOUT`, closes what is left and then the databases. Tornado's
`close_all_connections()` alone would cut requests in flight, hence `DrainingHTTPServer`.
When `LINKD_API_PORT` gives the internal API a listener of its own, the worker serves
`make_api_app` there with a second `DrainingHTTPServer`, drained together with the first.
Worker 0 alone runs the housekeeping (purge of expired rows, background token refresh).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tornado.web

from .config import Settings
from .draining import DrainingHTTPServer, make_server
from .errors import ConfigError, LinkdError
from .logs import set_level
from .service import Services, build_services
from .systemd import describe
from .web import make_api_app, make_app

log = logging.getLogger("linkd.daemon")
PURGE_EVERY = 300.0  # seconds between purges of expired sessions, states and events
REFRESH_EVERY = 60.0  # seconds between background refreshes of expiring tokens
READY, BEAT = b"R", b"H"
Reload = Callable[[], Settings]


@dataclass
class Worker:
    """Serves `sockets` (and the API on `api_sockets`) in the running loop until SIGTERM/SIGINT; drains."""

    settings: Settings
    sockets: list[socket.socket]
    extra_handlers: list[Any] | None = None
    index: int = 0
    channel: int | None = None  # pipe to the supervisor: READY once, then a BEAT per heartbeat
    heartbeat: float | None = None
    reload: Reload | None = None
    early_signals: list[int] = field(default_factory=list)
    api_sockets: list[socket.socket] = field(default_factory=list)  # LINKD_API_PORT's own listener

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if self.reload is not None:
            loop.add_signal_handler(signal.SIGHUP, reload_log_level, self.reload)
        if self.early_signals:
            stop.set()
        services = await build_services(self.settings)
        beat: asyncio.Task[None] | None = None
        jobs: list[asyncio.Task[None]] = []
        try:
            if stop.is_set():
                return
            apps, servers = self._listen(services)
            self._send(READY)
            if self.heartbeat:
                beat = asyncio.create_task(self._beat(self.heartbeat))
            if self.index == 0:
                jobs.append(asyncio.create_task(_every(PURGE_EVERY, stop, lambda: _purge(services))))
                jobs.append(asyncio.create_task(_every(REFRESH_EVERY, stop, lambda: _refresh(services))))
            await stop.wait()
            for each in apps:
                each.settings["draining"] = True  # for a readiness check that should turn 503 now
            await self._drain(servers, jobs)
        finally:
            for task in [*jobs, *([beat] if beat else [])]:
                task.cancel()
            await asyncio.gather(*jobs, *([beat] if beat else []), return_exceptions=True)
            await services.close()
            log.info("worker %d stopped; databases closed", self.index)

    def _listen(self, services: Services) -> tuple[list[tornado.web.Application], list[DrainingHTTPServer]]:
        """The main application on `sockets` and, given a listener of its own, the API on `api_sockets`."""
        app = make_app(services, self.extra_handlers)
        server = make_server(app)
        server.add_sockets(self.sockets)
        apps, servers = [app], [server]
        where = ", ".join(describe(s) for s in self.sockets)
        if self.api_sockets:
            api_app = make_api_app(services)
            api_server = make_server(api_app)
            api_server.add_sockets(self.api_sockets)
            apps.append(api_app)
            servers.append(api_server)
            where += "; API on " + ", ".join(describe(s) for s in self.api_sockets)
        elif self.settings.api_port and self.settings.api_token:
            log.warning("LINKD_API_PORT is set but worker %d has no API listener: /api/v1 is off", self.index)
        log.info("worker %d serving on %s", self.index, where)
        return apps, servers

    async def _drain(self, servers: list[DrainingHTTPServer], jobs: list[asyncio.Task[None]]) -> None:
        """Requests in flight (on every listener) and a running housekeeping job (a token refresh!)
        finish by the deadline."""
        loop = asyncio.get_running_loop()
        timeout = self.settings.shutdown_timeout
        started = loop.time()
        in_flight = sum(server.in_flight for server in servers)
        log.info("worker %d draining: %d request(s) in flight, up to %gs", self.index, in_flight, timeout)
        drained = await asyncio.gather(*(server.drain(timeout) for server in servers))
        waiting, cut = sum(w for w, _ in drained), sum(c for _, c in drained)
        if jobs:
            await asyncio.wait(jobs, timeout=max(0.0, started + timeout - loop.time()))
        log.info(
            "worker %d drained in %.0f ms: %d request(s) finished, %d cut at the deadline",
            self.index,
            1000 * (loop.time() - started),
            waiting - cut,
            cut,
        )

    def _send(self, message: bytes) -> None:
        if self.channel is not None:
            with contextlib.suppress(OSError):  # a full pipe or a gone supervisor: nothing to tell
                os.write(self.channel, message)

    async def _beat(self, interval: float) -> None:
        while True:
            self._send(BEAT)
            await asyncio.sleep(interval)


async def _every(interval: float, stop: asyncio.Event, job: Callable[[], Any]) -> None:
    """Run `job` now and every `interval` s until `stop`; a run in progress is never interrupted by it."""
    while not stop.is_set():
        try:
            await job()
        except Exception as exc:  # one failed run must not end the housekeeping
            log.warning("housekeeping failed: %s", type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def _purge(services: Services) -> None:
    counts = await services.store.purge(time.time())
    level = logging.INFO if any(counts.values()) else logging.DEBUG
    log.log(level, "purged expired rows: %s", ", ".join(f"{k}={v}" for k, v in counts.items()) or "none")


async def _refresh(services: Services) -> None:
    refreshed = await services.tokens.refresh_due()
    log.log(logging.INFO if refreshed else logging.DEBUG, "background refresh: %d connection(s)", refreshed)


def reload_log_level(reload: Reload) -> None:
    try:
        level = reload().log_level
    except ConfigError as exc:
        log.warning("SIGHUP: configuration not reloaded: %s", "; ".join(exc.problems))
        return
    set_level(level)
    # said at the new level when it is above INFO, so that the line is not filtered out by itself
    log.log(max(logging.INFO, logging.getLogger().getEffectiveLevel()), "SIGHUP: log level is now %s", level)


def worker_main(
    settings: Settings,
    sockets: list[socket.socket],
    index: int,
    channel: int,
    ping_every: float | None,
    reload: Reload | None,
    api_sockets: list[socket.socket],
) -> int:
    """The body of a forked worker process; returns its exit status (2: configuration)."""
    early: list[int] = []
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: early.append(signum))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    heartbeat = ping_every / 2 if ping_every else None
    worker = Worker(settings, sockets, None, index, channel, heartbeat, reload, early, api_sockets)
    try:
        asyncio.run(worker.run())
        return 0
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("configuration problem: %s", problem)
        return 2
    except LinkdError as exc:
        log.error("worker %d cannot serve: %s", index, exc.message)
        return 1
    except Exception:
        log.exception("worker %d crashed", index)
        return 1
    finally:
        logging.shutdown()
