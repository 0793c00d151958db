"""The supervisor of `linkd serve`: forks the workers, watches them, and alone talks to systemd.

It stays single-threaded and never serves; it is the only process that speaks sd_notify
(`NotifyAccess=main`): READY=1 once every worker has opened the databases and serves
the socket, WATCHDOG=1 only while every worker's event loop beats on its pipe,
STOPPING=1 on SIGTERM/SIGINT, which it forwards. A dead worker is replaced. Workers are
forked, never exec'd: secrets never reach a child's environment or argv.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import select
import signal
import socket
import time
from dataclasses import dataclass

from .config import Settings
from .systemd import Notifier, describe, watchdog_interval
from .worker import READY, Reload, reload_log_level, worker_main

log = logging.getLogger("linkd.daemon")
KILL_GRACE = 5.0  # seconds after the drain deadline before a worker is SIGKILLed
MAX_DEATHS, DEATH_WINDOW = 5, 60.0  # more worker deaths than this within the window: give up
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)


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
        self,
        settings: Settings,
        sockets: list[socket.socket],
        reload: Reload | None = None,
        api_sockets: list[socket.socket] | None = None,
    ) -> None:
        self.settings = settings
        self.sockets = sockets
        self.api_sockets = api_sockets or []
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
        self.api_where = ", ".join(describe(s) for s in self.api_sockets)

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
        reload_log_level(self.reload)
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
                code = worker_main(
                    self.settings,
                    self.sockets,
                    index,
                    write_end,
                    self.ping_every,
                    self.reload,
                    self.api_sockets,
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
        if self.api_where:
            status += f", API on {self.api_where}"
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
        for sock in [*self.sockets, *self.api_sockets]:
            sock.close()


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGTERM this worker if the supervisor dies (e.g. kill -9), so none is orphaned."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)
