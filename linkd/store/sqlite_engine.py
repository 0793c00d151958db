"""The plumbing under `SQLiteStore`: connections, transactions with retries, files, migrations.

Durability (D1): the *token* database (users, connections, webhook ids, deletions,
audit) runs `synchronous=FULL`, so a committed token write survives a power loss,
not only a `kill -9`. The *session* database (sessions, states) runs
`synchronous=NORMAL`: in WAL mode that still survives any process crash, and a
power loss may lose only the last sessions or states created (the person signs
in again), never a token. When both paths name one file, FULL applies to it.

Contention (D3): nothing that can wait runs on the event loop. A statement is first
tried on the calling thread's own connection with `busy_timeout = 0` (reads, and the
short session-database writes, which never fsync under NORMAL): it either runs at once
(tens of microseconds: no thread hop, no GIL hand-over) or SQLite answers "busy"
without waiting, and the very same call is handed to the thread pools. There each
connection waits `busy_timeout` (150 ms) inside SQLite; an outer loop retries until
`lock_wait` seconds have passed, then raises `StoreBusy`. Token-database writes
(fsync'd) always go to the pool. Writes start with `BEGIN IMMEDIATE`, so a transaction
never fails half-way on a lock upgrade. A read (`ping()` included) that cannot run
inline goes to its own single reader thread, never queued behind the writers: WAL
readers never wait for a writer, so a writer stuck behind another process's lock
delays neither `/healthz` nor lookups. Inline connections never checkpoint (a
checkpoint fsyncs); every `_CHECKPOINT_EVERY` inline commits a pool thread does it
(see `_checkpoint` for why it is mostly PASSIVE).

Files (D4): the data directory is created 0700 and database files 0600 (SQLite
gives `-wal`/`-shm` the mode of the main file); opening refuses files or a
directory that group or others can access.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import sqlite3
import stat
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ..errors import ConfigError, StoreBusy, StoreUnavailable
from . import sqlite_migrations as schema
from .base import ConnectionRow
from .sqlite_tx import Conn, T

_BUSY_TIMEOUT_MS = 150
_CHECKPOINT_EVERY = 500  # inline commits between two checkpoints on a pool thread
_RESTART_FRAMES = 4096  # WAL frames (16 MiB of 4 KiB pages) past which a checkpoint restarts the WAL
_PING_TIMEOUT = 2.0
_MIN_SQLITE = (3, 35, 0)  # DELETE … RETURNING


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _unavailable(exc: sqlite3.Error) -> StoreUnavailable:
    """A StoreUnavailable naming only SQLite's error code: no path, no SQL, no value."""
    return StoreUnavailable(sqlite_error=getattr(exc, "sqlite_errorname", type(exc).__name__))


def _checkpoint(conn: Conn) -> None:
    """A PASSIVE checkpoint, and a RESTART once the WAL is long.

    PASSIVE copies pages without blocking anyone, but under a steady stream of commits it
    never finishes the WAL, and only a finished WAL starts over: the file would grow for as
    long as logins come. RESTART finishes it but holds writers off for its fsync (measured:
    every 500 commits, it cost 10 % of the login rate and quadrupled p99 at one connection),
    so it runs only when the WAL passed `_RESTART_FRAMES`, with the pages mostly copied already.
    """
    _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    if frames >= _RESTART_FRAMES:
        conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()


class _Missed:
    """What an inline attempt returns when it did not run: the call goes to the pool instead."""


MISSED = _Missed()


class _Pool:
    """One connection per (thread, file), created on first use and tracked so close() reaches all.

    A thread outlives a close() when it is the caller's own (inline connections): the
    generation tells its thread-local connection from one made after the store was reopened.
    """

    def __init__(self, connect: Callable[[str], Conn]) -> None:
        self._connect = connect
        self._local = threading.local()
        self._all: list[Conn] = []
        self._lock = threading.Lock()
        self._generation = 0

    def get(self, path: str) -> Conn:
        conns: dict[str, tuple[int, Conn]] = self._local.__dict__.setdefault("conns", {})
        entry = conns.get(path)
        if entry is not None and entry[0] == self._generation:
            return entry[1]
        conn = self._connect(path)
        conns[path] = (self._generation, conn)
        with self._lock:
            self._all.append(conn)
        return conn

    def discard(self, path: str) -> None:
        """Drop this thread's connection after a hard error; the next call reconnects."""
        entry = self._local.__dict__.get("conns", {}).pop(path, None)
        if entry is not None:
            with self._lock:
                if entry[1] in self._all:
                    self._all.remove(entry[1])
            entry[1].close()

    def close_all(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
            self._generation += 1
        for conn in conns:
            conn.close()


class SQLiteEngine:
    """Two database roles (sessions, tokens) on one or two files, each reached through pools of
    per-thread connections: writes on a few writer threads, reads on a reader thread of their own."""

    def __init__(
        self, session_db_path: str, token_db_path: str, *, lock_wait: float = 5.0, threads: int = 4
    ) -> None:
        self._paths = {
            schema.SESSION: os.path.abspath(session_db_path),
            schema.TOKEN: os.path.abspath(token_db_path),
        }
        self._roles: dict[str, list[str]] = {}  # path -> roles it holds, in schema.ROLES order
        for role in schema.ROLES:
            self._roles.setdefault(self._paths[role], []).append(role)
        self._lock_wait = lock_wait
        self.schema_change: tuple[int, int] = (0, 0)  # see Store.schema_change
        self._threads = threads
        # Connections are made and used in one pool thread each; check_same_thread is off
        # only so that close() can close them from the closing thread once the pools stopped.
        self._writer_conns = _Pool(functools.partial(self._connect, query_only=False))
        self._reader_conns = _Pool(functools.partial(self._connect, query_only=True))
        self._inline_conns = _Pool(functools.partial(self._connect, query_only=False, inline=True))
        self._inline_commits = dict.fromkeys(self._roles, 0)
        self._writers: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None

    # plumbing -----------------------------------------------------------------------------
    def _connect(self, path: str, *, query_only: bool, inline: bool = False) -> Conn:
        uri = "file:" + urllib.parse.quote(path) + "?mode=rw"  # never create a file with the umask's mode
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=0.0)
        try:
            conn.execute(f"PRAGMA busy_timeout = {0 if inline else _BUSY_TIMEOUT_MS}")
            if inline:
                conn.execute("PRAGMA wal_autocheckpoint = 0")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA synchronous = {self._synchronous(path)}")
            conn.execute("PRAGMA journal_size_limit = 67108864")
            conn.execute("PRAGMA secure_delete = ON")  # deleted rows are zeroed, not left in free pages
            if query_only:
                conn.execute("PRAGMA query_only = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _attempts(
        self, pool: _Pool, path: str, fn: Callable[[Conn], T], begin: str | None, deadline: float
    ) -> T:
        """Run fn in one transaction, retrying while the database is locked, until `deadline`.

        The deadline (time.monotonic) is fixed when the call is submitted, not when a pool thread
        picks it up: a burst queued behind a held lock answers 503 after one wait budget, not several.
        """
        while True:
            try:
                conn = pool.get(path)
                if begin is None:
                    return fn(conn)
                conn.execute(begin)
                try:
                    result = fn(conn)
                    conn.execute("COMMIT")
                    return result
                finally:
                    if conn.in_transaction:
                        try:
                            conn.execute("ROLLBACK")
                        except sqlite3.Error:
                            pool.discard(path)
            except sqlite3.Error as exc:
                if not _is_busy(exc):
                    if not isinstance(exc, sqlite3.IntegrityError):
                        pool.discard(path)
                    raise _unavailable(exc) from exc
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StoreBusy() from None
                time.sleep(min(remaining, random.uniform(0.002, 0.02)))  # noqa: S311 -- jitter, not a secret

    def _synchronous(self, path: str) -> str:
        return "FULL" if schema.TOKEN in self._roles[path] else "NORMAL"

    def _inline(self, path: str, fn: Callable[[Conn], T], begin: str) -> T | _Missed:
        """Run fn at once on this thread's own connection, or return MISSED without waiting.

        busy_timeout is 0 here, so a held lock answers SQLITE_BUSY instead of a wait; any error
        at all leaves the call to the pool path, which retries it or raises the typed error.
        """
        if self._writers is None:
            return MISSED
        try:
            conn = self._inline_conns.get(path)
            conn.execute(begin)
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            if not _is_busy(exc) and not isinstance(exc, sqlite3.IntegrityError):
                self._inline_conns.discard(path)  # as the pool does: a hard error gets a new connection
            return MISSED
        if begin != "BEGIN":
            self._inline_commits[path] += 1
            if self._inline_commits[path] >= _CHECKPOINT_EVERY:
                self._inline_commits[path] = 0
                self._checkpoint_soon(path)
        return result

    def _checkpoint_soon(self, path: str) -> None:
        """Fold the WAL the inline commits grew back into the database, on a writer thread."""
        call = functools.partial(
            self._attempts, self._writer_conns, path, _checkpoint, None, time.monotonic() + 0.5
        )
        future = asyncio.get_running_loop().run_in_executor(self._executor(self._writers), call)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # best effort, never raised

    async def _write(
        self, role: str, fn: Callable[[Conn], T], *, wait: float | None = None, inline: bool = True
    ) -> T:
        """A write transaction (BEGIN IMMEDIATE): inline when short and free of fsync, else on a
        writer thread. `inline=False` for statements whose size has no bound (purges, batches)."""
        path = self._paths[role]
        if inline and self._synchronous(path) == "NORMAL":
            result = self._inline(path, fn, "BEGIN IMMEDIATE")
            if not isinstance(result, _Missed):
                return result
        budget = self._lock_wait if wait is None else wait
        call = functools.partial(
            self._attempts,
            self._writer_conns,
            self._paths[role],
            fn,
            "BEGIN IMMEDIATE",
            time.monotonic() + budget,
        )
        return await asyncio.get_running_loop().run_in_executor(self._executor(self._writers), call)

    async def _read(
        self, role: str, fn: Callable[[Conn], T], *, wait: float | None = None, inline: bool = True
    ) -> T:
        """A read snapshot: inline, else on the reader thread, which never queues behind writers."""
        if inline:
            result = self._inline(self._paths[role], fn, "BEGIN")
            if not isinstance(result, _Missed):
                return result
        budget = self._lock_wait if wait is None else wait
        deadline = time.monotonic() + budget
        call = functools.partial(self._attempts, self._reader_conns, self._paths[role], fn, "BEGIN", deadline)
        return await asyncio.get_running_loop().run_in_executor(self._executor(self._reader), call)

    @staticmethod
    def _executor(executor: ThreadPoolExecutor | None) -> ThreadPoolExecutor:
        if executor is None:
            raise StoreUnavailable("The store is not open.")
        return executor

    # lifecycle ------------------------------------------------------------------------------
    async def open(self) -> None:
        if sqlite3.sqlite_version_info < _MIN_SQLITE:
            raise ConfigError([f"SQLite >= 3.35 is required, this Python has {sqlite3.sqlite_version}"])
        if self._writers is not None:
            return  # already open
        self._writers = ThreadPoolExecutor(self._threads, thread_name_prefix="linkd-sqlite-write")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="linkd-sqlite-read")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._writers, self._prepare_files)
            await loop.run_in_executor(self._writers, self._migrate_all)
            await self.ping()  # also opens the reader connections before any request needs them
        except BaseException:
            await self.close()
            raise

    def _prepare_files(self) -> None:
        """Create the directory (0700) and files (0600); refuse ones that others can read (D4)."""
        problems: list[str] = []
        for directory in sorted({os.path.dirname(p) for p in self._roles}):
            if not os.path.isdir(directory):
                os.makedirs(os.path.dirname(directory), exist_ok=True)
                try:
                    os.mkdir(directory, 0o700)
                    os.chmod(directory, 0o700)
                except FileExistsError:
                    pass  # another process made it: checked below like any existing one
            mode = stat.S_IMODE(os.stat(directory).st_mode)
            if mode & 0o077:
                problems.append(
                    f"{directory}: data directory is accessible by group or others "
                    f"(mode {mode:o}); run chmod 700 on it"
                )
        for path in self._roles:
            for name in (path, path + "-wal", path + "-shm"):
                if os.path.exists(name):
                    mode = stat.S_IMODE(os.stat(name).st_mode)
                    if mode & 0o077:
                        problems.append(
                            f"{name}: database file is readable by group or others "
                            f"(mode {mode:o}); run chmod 600 on it"
                        )
        if problems:
            raise ConfigError(problems)
        for path in self._roles:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                continue
            try:
                os.fchmod(fd, 0o600)  # exact mode, whatever the umask
            finally:
                os.close(fd)

    def _migrate_all(self) -> None:
        for path, roles in self._roles.items():
            mode = self._attempts(
                self._writer_conns,
                path,
                lambda c: str(c.execute("PRAGMA journal_mode = WAL").fetchone()[0]),
                None,
                time.monotonic() + self._lock_wait,
            )
            if mode.lower() != "wal":
                raise ConfigError([f"{path}: SQLite cannot use WAL journal mode here (got {mode})"])
            try:
                before, after = self._attempts(
                    self._writer_conns,
                    path,
                    functools.partial(schema.migrate, roles=roles),
                    "BEGIN IMMEDIATE",
                    time.monotonic() + max(self._lock_wait, 30.0),
                )
            except schema.SchemaTooNew:
                raise ConfigError([f"{path}: the database was migrated by a newer linkd"]) from None
            if after != before:  # one number for all files: the oldest before, the newest after
                first = before if self.schema_change == (0, 0) else min(self.schema_change[0], before)
                self.schema_change = (first, max(self.schema_change[1], after))
            for name in (path + "-wal", path + "-shm"):
                with contextlib.suppress(OSError):  # absent, or not ours: _prepare_files checked those
                    os.chmod(name, 0o600)

    async def close(self) -> None:
        def stop() -> None:
            for executor in (self._writers, self._reader):
                if executor is not None:
                    executor.shutdown(wait=True)
            self._writers = self._reader = None
            self._writer_conns.close_all()
            self._reader_conns.close_all()
            self._inline_conns.close_all()

        await asyncio.to_thread(stop)

    async def ping(self) -> None:
        try:
            for role in self._distinct_roles():
                await asyncio.wait_for(
                    self._read(
                        role, lambda c: c.execute("SELECT count(*) FROM sqlite_master").fetchone(), wait=0
                    ),
                    _PING_TIMEOUT,
                )
        except (StoreBusy, TimeoutError):
            raise StoreUnavailable() from None

    def _distinct_roles(self) -> list[str]:
        return [roles[0] for roles in self._roles.values()]

    def describe(self) -> str:
        if len(self._roles) == 1:
            return f"sqlite:{self._paths[schema.TOKEN]}"
        return f"sqlite: sessions={self._paths[schema.SESSION]} tokens={self._paths[schema.TOKEN]}"

    async def _scrubbed(self, removed: list[ConnectionRow]) -> list[ConnectionRow]:
        """After a deletion, fold the WAL into the zeroed main file and truncate it, so the
        removed account leaves no trace in `-wal` either (best effort: a busy reader defers it)."""
        if removed:
            call = functools.partial(
                self._attempts,
                self._writer_conns,
                self._paths[schema.TOKEN],
                lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone(),
                None,
                time.monotonic() + 0.5,
            )
            with contextlib.suppress(StoreBusy, StoreUnavailable):
                await asyncio.get_running_loop().run_in_executor(self._executor(self._writers), call)
        return removed
