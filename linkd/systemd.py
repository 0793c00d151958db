"""The two systemd protocols linkd speaks, without libsystemd: sd_notify and socket activation.

Both are plain conventions over environment variables that systemd sets for the
service's main process. They are read here (not in `config.py`) because they are
not settings: they describe how this process was started. Everything is a no-op
outside systemd, and notifying never raises: a daemon must not die because its
supervisor's socket went away. Modelled on gunicorn's `systemd.py`.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

log = logging.getLogger("linkd.systemd")
SD_LISTEN_FDS_START = 3


def _address(value: str) -> str | None:
    """`NOTIFY_SOCKET` as an AF_UNIX address: a path, or `@name` for the abstract namespace."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock and other transports are not for a Python daemon


class Notifier:
    """Sends sd_notify datagrams to the socket systemd named; silent when there is none.

    The variable is read once and removed from the environment, so nothing this
    process starts can notify on its behalf (the unit says `NotifyAccess=main`).
    """

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.pop("NOTIFY_SOCKET", "")
        self.address = _address(raw) if raw else None
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send `KEY=value` lines as one datagram; True when it was handed to the kernel."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode("utf-8", "replace"), self.address)
            return True
        except OSError as exc:
            log.debug("sd_notify failed: %s", exc.strerror or type(exc).__name__)
            return False

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={_one_line(status)}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={_one_line(status)}")

    def stopping(self, status: str) -> bool:
        return self.notify("STOPPING=1", f"STATUS={_one_line(status)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def watchdog_interval(environ: MutableMapping[str, str] | None = None) -> float | None:
    """Seconds between two `WATCHDOG=1` pings (half of `WATCHDOG_USEC`), or None when off.

    `WATCHDOG_PID`, when set, must name this process (as sd_watchdog_enabled checks).
    Both variables are removed so that worker processes never believe they own the watchdog.
    """
    env = os.environ if environ is None else environ
    usec = env.pop("WATCHDOG_USEC", "")
    pid = env.pop("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None


def listen_sockets(environ: MutableMapping[str, str] | None = None) -> list[socket.socket]:
    """The listening sockets passed by systemd socket activation (fd 3 onwards), else [].

    Only when `LISTEN_PID` is this process: a variable inherited by accident is ignored.
    The variables are removed either way. The sockets are made non-blocking and
    non-inheritable, as a Tornado server wants them.
    """
    env = os.environ if environ is None else environ
    pid = env.pop("LISTEN_PID", "")
    count = env.pop("LISTEN_FDS", "")
    env.pop("LISTEN_FDNAMES", None)
    if pid != str(os.getpid()):
        return []
    try:
        n = int(count)
    except ValueError:
        return []
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + max(n, 0)):
        sock = socket.socket(fileno=fd)
        if sock.type != socket.SOCK_STREAM:
            sock.detach()
            raise OSError(f"socket activation passed fd {fd}, which is not a stream socket")
        sock.set_inheritable(False)
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


def describe(sock: socket.socket) -> str:
    """`host:port` (or the path) a listening socket is bound to, for logs and STATUS."""
    address = sock.getsockname()
    if isinstance(address, tuple):
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)
