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
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tornado.httpserver
import tornado.httputil
import tornado.netutil

from .config import Settings
from .errors import ConfigError, LinkdError
from .logs import register_secret, set_level, setup_logging
from .registry import Registry
from .service import Services, build_services, discover
from .systemd import Notifier, describe, listen_sockets, watchdog_interval
from .web import make_app

log = logging.getLogger("linkd.daemon")
MAX_BODY = 1024 * 1024
MAX_HEADERS = 16 * 1024
PURGE_EVERY = 300.0  # seconds between purges of expired sessions, states and events
REFRESH_EVERY = 60.0  # seconds between background refreshes of expiring tokens
KILL_GRACE = 5.0  # seconds after the drain deadline before a worker is SIGKILLed
MAX_DEATHS, DEATH_WINDOW = 5, 60.0  # more worker deaths than this within the window: give up
READY, BEAT = b"R", b"H"
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
Reload = Callable[[], Settings]


# -- one serving event loop ------------------------------------------------------------------------


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


@dataclass
class Worker:
    """Serves `sockets` from the running event loop until SIGTERM/SIGINT, then drains."""

    settings: Settings
    sockets: list[socket.socket]
    extra_handlers: list[Any] | None = None
    index: int = 0
    channel: int | None = None  # pipe to the supervisor: READY once, then a BEAT per heartbeat
    heartbeat: float | None = None
    reload: Reload | None = None
    early_signals: list[int] = field(default_factory=list)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if self.reload is not None:
            loop.add_signal_handler(signal.SIGHUP, _reload_log_level, self.reload)
        if self.early_signals:
            stop.set()
        services = await build_services(self.settings)
        beat: asyncio.Task[None] | None = None
        jobs: list[asyncio.Task[None]] = []
        try:
            if stop.is_set():
                return
            app = make_app(services, self.extra_handlers)
            server = make_server(app)
            server.add_sockets(self.sockets)
            log.info("worker %d serving on %s", self.index, ", ".join(describe(s) for s in self.sockets))
            self._send(READY)
            if self.heartbeat:
                beat = asyncio.create_task(self._beat(self.heartbeat))
            if self.index == 0:
                jobs.append(asyncio.create_task(_every(PURGE_EVERY, stop, lambda: _purge(services))))
                jobs.append(asyncio.create_task(_every(REFRESH_EVERY, stop, lambda: _refresh(services))))
            await stop.wait()
            app.settings["draining"] = True  # for a readiness check that should turn 503 now
            await self._drain(server, jobs)
        finally:
            for task in [*jobs, *([beat] if beat else [])]:
                task.cancel()
            await asyncio.gather(*jobs, *([beat] if beat else []), return_exceptions=True)
            await services.close()
            log.info("worker %d stopped; databases closed", self.index)

    async def _drain(self, server: DrainingHTTPServer, jobs: list[asyncio.Task[None]]) -> None:
        """Requests in flight and a running housekeeping job (a token refresh!) finish by the deadline."""
        loop = asyncio.get_running_loop()
        timeout = self.settings.shutdown_timeout
        started = loop.time()
        log.info(
            "worker %d draining: %d request(s) in flight, up to %gs", self.index, server.in_flight, timeout
        )
        waiting, cut = await server.drain(timeout)
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


def _reload_log_level(reload: Reload) -> None:
    try:
        level = reload().log_level
    except ConfigError as exc:
        log.warning("SIGHUP: configuration not reloaded: %s", "; ".join(exc.problems))
        return
    set_level(level)
    # said at the new level when it is above INFO, so that the line is not filtered out by itself
    log.log(max(logging.INFO, logging.getLogger().getEffectiveLevel()), "SIGHUP: log level is now %s", level)


def protect_secrets(settings: Settings, registry: Registry | None = None) -> None:
    """Register every secret value the settings hold, so no log line can ever carry one."""
    register_secret(settings.secret, *settings.previous_secrets, settings.api_token, settings.database_url)
    registry = registry or discover(settings)[1]
    for entry in registry.entries.values():
        for setting in entry.cls.settings:
            if setting.secret:
                register_secret(*str(settings.env.get(setting.name, "")).split(","))


def bind(settings: Settings) -> list[socket.socket]:
    """The sockets systemd passed (socket activation), else freshly bound ones."""
    return listen_sockets() or tornado.netutil.bind_sockets(settings.port, settings.host)


async def run_forever(settings: Settings, extra_handlers: list[Any] | None = None) -> None:
    """One process, one loop, no supervisor (used by `linkd demo`): serve until SIGTERM/SIGINT."""
    protect_secrets(settings)
    await Worker(settings, bind(settings), extra_handlers).run()


# -- the supervisor ---------------------------------------------------------------------------------


@dataclass
class _Child:
    pid: int
    index: int
    fd: int
    ready: bool = False
    last_beat: float = 0.0
    eof: bool = False


class Supervisor:
    """Forks and watches the workers; the only process that talks to systemd."""

    def __init__(
        self, settings: Settings, sockets: list[socket.socket], reload: Reload | None = None
    ) -> None:
        self.settings = settings
        self.sockets = sockets
        self.reload = reload
        self.notifier = Notifier()
        self.ping_every = watchdog_interval()
        self.children: dict[int, _Child] = {}
        self.deaths: collections.deque[float] = collections.deque(maxlen=MAX_DEATHS)
        self.pending: list[int] = []
        self.stopping = False
        self.kill_at = 0.0
        self.ready_sent = False
        self.withheld = False
        self.exit_code = 0
        self.next_ping = time.monotonic()
        self.started = time.monotonic()
        self.where = ", ".join(describe(s) for s in sockets)

    # life cycle
    def run(self) -> int:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in SIGNALS}
        try:
            self.notifier.status(f"starting {self.settings.workers} worker(s) on {self.where}")
            for index in range(self.settings.workers):
                self._spawn(index)
            while self.children or not self.stopping:
                self._wait()
                self._handle_signals()
                self._read_children()
                self._reap()
                self._tick()
            self.notifier.status("stopped")
            log.info("stopped")
            return self.exit_code
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for fd in (self._wake_r, self._wake_w, *(c.fd for c in self.children.values())):
                os.close(fd)
            self._close_sockets()
            self.notifier.close()

    def _on_signal(self, signum: int, frame: object) -> None:
        self.pending.append(signum)

    def _wait(self) -> None:
        now = time.monotonic()
        deadlines = [self.next_ping] if self.ping_every else []
        if self.stopping:
            deadlines.append(self.kill_at)
        timeout = max(0.0, min(deadlines) - now) if deadlines else None
        fds = [self._wake_r, *(c.fd for c in self.children.values() if not c.eof)]
        select.select(fds, [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass

    def _handle_signals(self) -> None:
        while self.pending:
            signum = self.pending.pop(0)
            if signum in (signal.SIGTERM, signal.SIGINT):
                self._begin_stop(f"{signal.Signals(signum).name} received")
            elif signum == signal.SIGHUP:
                self._reload()

    def _begin_stop(self, why: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        timeout = self.settings.shutdown_timeout
        self.kill_at = time.monotonic() + timeout + KILL_GRACE
        log.info("%s: stopping, in-flight requests may take up to %gs", why, timeout)
        self.notifier.stopping(f"stopping: draining in-flight requests (up to {timeout:g}s)")
        self._close_sockets()
        self._signal_children(signal.SIGTERM)

    def _reload(self) -> None:
        if self.reload is None:
            log.info("SIGHUP ignored: restart linkd to apply configuration changes")
            return
        _reload_log_level(self.reload)
        self._signal_children(signal.SIGHUP)

    # workers
    def _spawn(self, index: int) -> None:
        read_end, write_end = os.pipe()
        supervisor = os.getpid()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            code = 1
            try:
                os.close(read_end)
                for fd in (self._wake_r, self._wake_w, *(c.fd for c in self.children.values())):
                    os.close(fd)
                self.notifier.close()
                _die_with_parent(supervisor)
                code = _worker_main(
                    self.settings, self.sockets, index, write_end, self.ping_every, self.reload
                )
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(write_end)
        os.set_blocking(read_end, False)
        self.children[pid] = _Child(pid, index, read_end, last_beat=time.monotonic())
        log.info("started worker %d (pid %d)", index, pid)

    def _signal_children(self, sig: int) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _read_children(self) -> None:
        now = time.monotonic()
        for child in self.children.values():
            if child.eof:
                continue
            try:
                data = os.read(child.fd, 4096)
            except BlockingIOError:
                continue
            if not data:
                child.eof = True
                continue
            child.last_beat = now
            if READY in data and not child.ready:
                child.ready = True
                self._on_ready(child)

    def _on_ready(self, child: _Child) -> None:
        if self.stopping or not all(c.ready for c in self.children.values()):
            return
        status = f"serving on {self.where} with {len(self.children)} worker(s)"
        if self.ready_sent:
            self.notifier.status(status)
            return
        self.ready_sent = True
        self.notifier.ready(status)
        log.info("ready in %.0f ms: %s", 1000 * (time.monotonic() - self.started), status)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                os.close(child.fd)
                self._on_exit(child, os.waitstatus_to_exitcode(status))

    def _on_exit(self, child: _Child, code: int) -> None:
        how = f"exit status {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
        if self.stopping:
            log.info("worker %d (pid %d) stopped (%s)", child.index, child.pid, how)
            return
        if not child.ready:
            log.error("worker %d (pid %d) failed to start (%s); stopping", child.index, child.pid, how)
            self.exit_code = 2 if code == 2 else 1
            self._begin_stop("startup failed")
            return
        now = time.monotonic()
        self.deaths.append(now)
        if len(self.deaths) == MAX_DEATHS and now - self.deaths[0] < DEATH_WINDOW:
            log.error("workers keep dying (%d in %.0fs); stopping", MAX_DEATHS, now - self.deaths[0])
            self.exit_code = 1
            self._begin_stop("giving up")
            return
        log.warning("worker %d (pid %d) died (%s); starting a replacement", child.index, child.pid, how)
        self.notifier.status(f"replacing worker {child.index} (pid {child.pid} died: {how})")
        self._spawn(child.index)

    def _tick(self) -> None:
        now = time.monotonic()
        if self.stopping and now >= self.kill_at and self.children:
            log.warning("drain deadline passed: killing %d worker(s)", len(self.children))
            self._signal_children(signal.SIGKILL)
            self.kill_at = now + 3600
        if self.ping_every is None or now < self.next_ping:
            return
        self.next_ping = now + self.ping_every
        stale = [c for c in self.children.values() if c.ready and now - c.last_beat > 1.5 * self.ping_every]
        if not stale:
            self.notifier.watchdog()
            if self.withheld:
                log.info("every worker answers again; watchdog pings resumed")
            self.withheld = False
        elif not self.withheld:
            self.withheld = True
            pids = ", ".join(str(c.pid) for c in stale)
            log.warning("worker(s) %s stopped answering; withholding the watchdog ping", pids)

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()


def _worker_main(
    settings: Settings,
    sockets: list[socket.socket],
    index: int,
    channel: int,
    ping_every: float | None,
    reload: Reload | None,
) -> int:
    """The body of a forked worker process; returns its exit status (2: configuration)."""
    early: list[int] = []
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: early.append(signum))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    worker = Worker(
        settings, sockets, None, index, channel, ping_every / 2 if ping_every else None, reload, early
    )
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


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGTERM this worker if the supervisor dies (e.g. kill -9), so none is orphaned."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


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
    return Supervisor(settings, sockets, reload).run()
