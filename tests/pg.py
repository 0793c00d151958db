"""A real PostgreSQL server for tests, started once per test session in a temporary directory.

Debian's `postgresql` package ships `initdb`/`pg_ctl` under `/usr/lib/postgresql/*/bin`
(or set `PGBIN`). PostgreSQL refuses to run as root, so when the tests run as root the
cluster directory belongs to the `postgres` user and the binaries run as that user.
The server listens on 127.0.0.1 on a free port with trust authentication (a password
in a URL is accepted and ignored, which lets tests check that it is never shown),
`fsync=on` (durability is part of what is tested) and small buffers. Each test gets
its own database (`CREATE DATABASE … TEMPLATE template0`), so tests stay isolated.

Without the binaries the tests skip locally with the command to install them; under
CI (`CI` set) they fail instead, so CI never silently skips them.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .processes import clean_env
from .servers import free_port

PASSWORD = "pw-" + uuid.uuid4().hex  # never checked (trust auth); tests assert it is never shown
INSTALL_HINT = "PostgreSQL server binaries not found: apt-get install postgresql (or set PGBIN)"


def find_bindir() -> Path | None:
    """`PGBIN`, else the newest `/usr/lib/postgresql/*/bin` that has initdb, pg_ctl and postgres."""
    candidates = [os.environ["PGBIN"]] if os.environ.get("PGBIN") else []

    def version(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    for candidate in candidates:
        path = Path(candidate)
        if all((path / name).exists() for name in ("initdb", "pg_ctl", "postgres")):
            return path
    return None


def require_bindir() -> Path:
    """The binaries, or skip (locally) / fail (CI) with the install command."""
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail(INSTALL_HINT + " (CI must not skip the PostgreSQL tests)")
        pytest.skip(INSTALL_HINT)
    return bindir


class PostgresServer:
    """One throwaway cluster: `start()`, then `new_database()` per test, `stop()` at the end."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="linkd-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = 0
        self.user = "postgres" if os.geteuid() == 0 else None  # PostgreSQL refuses to run as root
        self.superuser = "postgres"
        self.running = False
        self._lock = threading.Lock()

    # running the binaries as the right user ------------------------------------------------------
    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            user=self.user,
            cwd=self.root,
            env={**_clean_env(), "LC_ALL": "C", "TZ": "UTC"},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}): {result.stderr.strip()}\n{self._tail()}"
            )
        return result

    def _tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def start(self) -> PostgresServer:
        if self.user is not None:
            shutil.chown(self.root, self.user, self.user)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            self.superuser,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        )
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": "300",
            "shared_buffers": "32MB",
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
            "log_min_messages": "warning",
            "log_min_error_statement": "panic",  # statements (and the values in them) stay out of the log
            "deadlock_timeout": "100ms",
        }
        with open(self.data / "postgresql.conf", "a") as fh:
            fh.write("".join(f"{k} = {v}\n" for k, v in conf.items()))
        for attempt in range(5):  # a free port can be taken between probing and binding: try another
            self.port = free_port()
            try:
                self._run(
                    "pg_ctl",
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-o",
                    f"-p {self.port}",
                    "-w",
                    "-t",
                    "60",
                    "start",
                )
                break
            except RuntimeError:
                if attempt == 4:
                    raise
        self.running = True
        self._watchdog = self._start_watchdog()
        return self

    def _start_watchdog(self) -> subprocess.Popen[bytes]:
        """A tiny process that stops the server if this one dies without cleaning up (kill -9, crash).

        It waits for EOF on its stdin, which comes when we close the pipe or when we die.
        """
        stop = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]
        script = (
            "import os, shutil, subprocess, sys\n"
            "sys.stdin.buffer.read()\n"
            f"subprocess.run({stop!r}, user={self.user!r}, cwd={str(self.root)!r},"
            " capture_output=True, timeout=60, check=False)\n"
            f"shutil.rmtree({str(self.root)!r}, ignore_errors=True)\n"
        )
        return subprocess.Popen(
            [sys.executable, "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the test run must not stop it before it cleans up
        )

    def stop(self) -> None:
        with self._lock:
            if self.running:
                self.running = False
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30)
            shutil.rmtree(self.root, ignore_errors=True)
            watchdog = getattr(self, "_watchdog", None)
            if watchdog is not None and watchdog.stdin is not None:
                watchdog.stdin.close()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    watchdog.wait(30)

    # databases ------------------------------------------------------------------------------------
    def url(self, dbname: str = "postgres", password: bool = True) -> str:
        auth = f"{self.superuser}:{PASSWORD}" if password else self.superuser
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def admin(self, sql: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement as the superuser (autocommit) and return its rows."""
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=10) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL (with a password that trust auth ignores)."""
        name = "t_" + uuid.uuid4().hex[:16]
        self.admin(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)


def _clean_env() -> dict[str, str]:
    return clean_env("PG")


_server: PostgresServer | None = None
_server_lock = threading.Lock()


def server() -> PostgresServer:
    """The session's server, started on first use and stopped when the test process exits."""
    global _server
    with _server_lock:
        if _server is None or not _server.running:
            _server = PostgresServer(require_bindir()).start()
            atexit.register(_server.stop)
        return _server


# Import these two into a test module (`from .pg import pg_server_fixture, pg_url_fixture`)
# and ask for `pg_server` / `pg_url`.
@pytest.fixture(scope="session", name="pg_server")
def pg_server_fixture() -> Iterator[PostgresServer]:
    yield server()


@pytest.fixture(name="pg_url")
def pg_url_fixture(pg_server: PostgresServer) -> str:
    """A fresh database on the session's server."""
    return pg_server.new_database()
