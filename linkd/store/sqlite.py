"""The embedded SQLite backend: WAL files shared by every worker process and CLI command.

Durability (D1): the *token* database (users, connections, webhook ids, deletions,
audit) runs `synchronous=FULL`, so a committed token write survives a power loss,
not only a `kill -9`. The *session* database (sessions, states) runs
`synchronous=NORMAL`: in WAL mode that still survives any process crash, and a
power loss may lose only the last sessions or states created (the person signs
in again), never a token. When both paths name one file, FULL applies to it.

Contention (D3): each connection waits `busy_timeout` (150 ms) inside SQLite; an
outer loop retries until `lock_wait` seconds have passed, then raises `StoreBusy`.
Writes start with `BEGIN IMMEDIATE`, so a transaction never fails half-way on a
lock upgrade. Reads and `ping()` run on their own single thread and connections:
WAL readers never wait for a writer, so a writer stuck behind another process's
lock delays neither `/healthz` nor lookups.

Files (D4): the data directory is created 0700 and database files 0600 (SQLite
gives `-wal`/`-shm` the mode of the main file); opening refuses files or a
directory that group or others can access.
"""

# ruff: noqa: S608 -- SQL text interpolates only module constants and "?" lists; values are always bound.
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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from typing import Any, TypeVar

from ..errors import AccountConflict, ConfigError, SessionRequired, StoreBusy, StoreUnavailable
from . import sqlite_migrations as schema
from .base import (
    RESEALABLE,
    ConnectionFilter,
    ConnectionRow,
    ConnectionWrite,
    DeletionRow,
    LinkOutcome,
    Reseal,
    SessionRow,
    StateRow,
    Store,
    UserRow,
)

T = TypeVar("T")
Conn = sqlite3.Connection

_BUSY_TIMEOUT_MS = 150
_PING_TIMEOUT = 2.0
_MIN_SQLITE = (3, 35, 0)  # DELETE … RETURNING
_TABLES = {
    schema.SESSION: ("sessions", "states"),
    schema.TOKEN: ("users", "connections", "webhook_events", "deletions", "audit"),
}
_STATUSES = ("active", "reconnect")


def _cols(cls: type) -> str:
    return ", ".join(f.name for f in fields(cls))


_SESSION_COLS = _cols(SessionRow)
_STATE_COLS = _cols(StateRow)
_USER_COLS = _cols(UserRow)
_CONN_COLS = _cols(ConnectionRow)
_DELETION_COLS = _cols(DeletionRow)


def _qs(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _unavailable(exc: sqlite3.Error) -> StoreUnavailable:
    """A StoreUnavailable naming only SQLite's error code: no path, no SQL, no value."""
    return StoreUnavailable(sqlite_error=getattr(exc, "sqlite_errorname", type(exc).__name__))


class _Pool:
    """One connection per (thread, file), created on first use and tracked so close() reaches all."""

    def __init__(self, connect: Callable[[str], Conn]) -> None:
        self._connect = connect
        self._local = threading.local()
        self._all: list[Conn] = []
        self._lock = threading.Lock()

    def get(self, path: str) -> Conn:
        conns: dict[str, Conn] = self._local.__dict__.setdefault("conns", {})
        conn = conns.get(path)
        if conn is None:
            conn = conns[path] = self._connect(path)
            with self._lock:
                self._all.append(conn)
        return conn

    def discard(self, path: str) -> None:
        """Drop this thread's connection after a hard error; the next call reconnects."""
        conn = self._local.__dict__.get("conns", {}).pop(path, None)
        if conn is not None:
            with self._lock:
                self._all.remove(conn)
            conn.close()

    def close_all(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


class SQLiteStore(Store):
    """Sessions and states in one database, tokens and everything else in another (or one file)."""

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
        self._threads = threads
        # Connections are made and used in one pool thread each; check_same_thread is off
        # only so that close() can close them from the closing thread once the pools stopped.
        self._writer_conns = _Pool(functools.partial(self._connect, query_only=False))
        self._reader_conns = _Pool(functools.partial(self._connect, query_only=True))
        self._writers: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None

    # plumbing -----------------------------------------------------------------------------
    def _connect(self, path: str, *, query_only: bool) -> Conn:
        uri = "file:" + urllib.parse.quote(path) + "?mode=rw"  # never create a file with the umask's mode
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=0.0)
        try:
            sync = "FULL" if schema.TOKEN in self._roles[path] else "NORMAL"
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA synchronous = {sync}")
            conn.execute("PRAGMA journal_size_limit = 67108864")
            conn.execute("PRAGMA secure_delete = ON")  # deleted rows are zeroed, not left in free pages
            if query_only:
                conn.execute("PRAGMA query_only = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _attempts(self, pool: _Pool, path: str, fn: Callable[[Conn], T], begin: str | None, wait: float) -> T:
        """Run fn in one transaction, retrying while the database is locked, up to `wait` seconds."""
        deadline = time.monotonic() + wait
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

    async def _write(self, role: str, fn: Callable[[Conn], T], *, wait: float | None = None) -> T:
        """A write transaction (BEGIN IMMEDIATE) on one of the writer threads."""
        budget = self._lock_wait if wait is None else wait
        call = functools.partial(
            self._attempts, self._writer_conns, self._paths[role], fn, "BEGIN IMMEDIATE", budget
        )
        return await asyncio.get_running_loop().run_in_executor(self._executor(self._writers), call)

    async def _read(self, role: str, fn: Callable[[Conn], T], *, wait: float | None = None) -> T:
        """A read snapshot on the reader thread, which never queues behind writers."""
        budget = self._lock_wait if wait is None else wait
        call = functools.partial(self._attempts, self._reader_conns, self._paths[role], fn, "BEGIN", budget)
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
                self._lock_wait,
            )
            if mode.lower() != "wal":
                raise ConfigError([f"{path}: SQLite cannot use WAL journal mode here (got {mode})"])
            try:
                self._attempts(
                    self._writer_conns,
                    path,
                    functools.partial(schema.migrate, roles=roles),
                    "BEGIN IMMEDIATE",
                    max(self._lock_wait, 30.0),
                )
            except schema.SchemaTooNew:
                raise ConfigError([f"{path}: the database was migrated by a newer linkd"]) from None
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

    # sessions -------------------------------------------------------------------------------
    async def insert_session(self, row: SessionRow) -> None:
        await self._write(schema.SESSION, lambda c: _insert(c, "sessions", row))

    async def get_session(self, id_hashes: Sequence[str], now: float) -> SessionRow | None:
        if not id_hashes:
            return None
        sql = f"SELECT {_SESSION_COLS} FROM sessions WHERE id_hash IN ({_qs(id_hashes)})"
        rows = await self._read(schema.SESSION, lambda c: [SessionRow(*r) for r in c.execute(sql, id_hashes)])
        expired = [r.id_hash for r in rows if r.expires_at <= now]
        if expired:
            delete = f"DELETE FROM sessions WHERE id_hash IN ({_qs(expired)}) AND expires_at <= ?"
            with contextlib.suppress(StoreBusy):  # best effort: purge() removes what a busy database kept
                await self._write(schema.SESSION, lambda c: c.execute(delete, [*expired, now]), wait=0)
        live = [r for r in rows if r.expires_at > now]
        return live[0] if live else None

    async def replace_session(self, old_hash: str | None, new: SessionRow | None) -> None:
        def tx(c: Conn) -> None:
            if old_hash is not None:
                c.execute("DELETE FROM sessions WHERE id_hash = ?", (old_hash,))
            if new is not None:
                _insert(c, "sessions", new)

        await self._write(schema.SESSION, tx)

    # states ---------------------------------------------------------------------------------
    async def insert_state(self, row: StateRow) -> None:
        await self._write(schema.SESSION, lambda c: _insert(c, "states", row))

    async def consume_state(self, state_hashes: Sequence[str]) -> StateRow | None:
        if not state_hashes:
            return None
        sql = f"DELETE FROM states WHERE state_hash IN ({_qs(state_hashes)}) RETURNING {_STATE_COLS}"
        rows = await self._write(schema.SESSION, lambda c: c.execute(sql, state_hashes).fetchall())
        return StateRow(*rows[0]) if rows else None

    # users and connections -------------------------------------------------------------------
    async def save_link(
        self,
        account: ConnectionWrite,
        session_uuid_hashes: Sequence[str],
        new_user: UserRow | None,
        now: float,
    ) -> LinkOutcome:
        return await self._write(
            schema.TOKEN, lambda c: _save_link(c, account, session_uuid_hashes, new_user, now)
        )

    async def get_user(self, uuid_hashes: Sequence[str]) -> UserRow | None:
        if not uuid_hashes:
            return None
        sql = f"SELECT {_USER_COLS} FROM users WHERE uuid_hash IN ({_qs(uuid_hashes)}) LIMIT 1"
        return await self._read(schema.TOKEN, lambda c: _one(UserRow, c.execute(sql, uuid_hashes)))

    async def get_user_by_id(self, user_id: str) -> UserRow | None:
        sql = f"SELECT {_USER_COLS} FROM users WHERE id = ?"
        return await self._read(schema.TOKEN, lambda c: _one(UserRow, c.execute(sql, (user_id,))))

    async def list_users(self, after_id: str = "", limit: int = 100) -> list[UserRow]:
        sql = f"SELECT {_USER_COLS} FROM users WHERE id > ? ORDER BY id LIMIT ?"
        return await self._read(
            schema.TOKEN, lambda c: [UserRow(*r) for r in c.execute(sql, (after_id, limit))]
        )

    async def delete_user(self, user_id: str) -> list[ConnectionRow]:
        def tx(c: Conn) -> list[ConnectionRow]:
            sql = "SELECT id FROM connections WHERE user_id = ? AND parent_id IS NULL"
            removed = _delete_ids(c, [r[0] for r in c.execute(sql, (user_id,))])
            sql = f"DELETE FROM connections WHERE user_id = ? RETURNING {_CONN_COLS}"  # orphans, if any
            removed += sorted(map(_row, c.execute(sql, (user_id,)).fetchall()), key=_by_id)
            c.execute("DELETE FROM users WHERE id = ?", (user_id,))
            return removed

        return await self._scrubbed(await self._write(schema.TOKEN, tx))

    async def get_connection(self, connection_id: int) -> ConnectionRow | None:
        return await self._read(schema.TOKEN, lambda c: _connection(c, connection_id))

    async def find_connection(self, provider: str, account_id: str) -> ConnectionRow | None:
        sql = f"SELECT {_CONN_COLS} FROM connections WHERE provider = ? AND account_id = ?"
        return await self._read(
            schema.TOKEN, lambda c: _one(ConnectionRow, c.execute(sql, (provider, account_id)))
        )

    async def list_connections(self, flt: ConnectionFilter) -> list[ConnectionRow]:
        where, args = ["id > ?"], [flt.after_id]
        for column in ("provider", "status", "account_id", "user_id"):
            value = getattr(flt, column)
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = f"SELECT {_CONN_COLS} FROM connections WHERE {' AND '.join(where)} ORDER BY id LIMIT ?"
        args.append(flt.limit)
        return await self._read(schema.TOKEN, lambda c: [ConnectionRow(*r) for r in c.execute(sql, args)])

    async def update_tokens(
        self,
        connection_id: int,
        tokens_sealed: str,
        expires_at: float | None,
        refresh_expires_at: float | None,
        now: float,
    ) -> None:
        sql = (
            "UPDATE connections SET tokens_sealed = ?, expires_at = ?, refresh_expires_at = ?, "
            "status = 'active', updated_at = ? WHERE id = ?"
        )
        args = (tokens_sealed, expires_at, refresh_expires_at, now, connection_id)
        await self._write(schema.TOKEN, lambda c: c.execute(sql, args))

    async def set_status(self, connection_id: int, status: str, now: float) -> None:
        if status not in _STATUSES:
            raise ValueError(f"unknown connection status {status!r}")
        sql = "UPDATE connections SET status = ?, updated_at = ? WHERE id = ?"
        await self._write(schema.TOKEN, lambda c: c.execute(sql, (status, now, connection_id)))

    async def delete_connections(self, provider: str, account_ids: Sequence[str]) -> list[ConnectionRow]:
        if not account_ids:
            return []
        sql = f"SELECT id FROM connections WHERE provider = ? AND account_id IN ({_qs(account_ids)})"
        return await self._scrubbed(
            await self._write(
                schema.TOKEN,
                lambda c: _delete_ids(c, [r[0] for r in c.execute(sql, [provider, *account_ids])]),
            )
        )

    async def delete_connection(self, connection_id: int) -> list[ConnectionRow]:
        return await self._scrubbed(
            await self._write(schema.TOKEN, lambda c: _delete_ids(c, [connection_id]))
        )

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
                0.5,
            )
            with contextlib.suppress(StoreBusy, StoreUnavailable):
                await asyncio.get_running_loop().run_in_executor(self._executor(self._writers), call)
        return removed

    # refresh serialisation --------------------------------------------------------------------
    async def acquire_refresh_lease(self, connection_id: int, owner: str, now: float, ttl: float) -> bool:
        sql = (
            "UPDATE connections SET refresh_owner = ?, refresh_until = ? WHERE id = ? "
            "AND (refresh_owner IS NULL OR refresh_until IS NULL OR refresh_until <= ?)"
        )
        args = (owner, now + ttl, connection_id, now)
        return await self._write(schema.TOKEN, lambda c: c.execute(sql, args).rowcount == 1)

    async def release_refresh_lease(self, connection_id: int, owner: str) -> None:
        sql = (
            "UPDATE connections SET refresh_owner = NULL, refresh_until = NULL "
            "WHERE id = ? AND refresh_owner = ?"
        )
        await self._write(schema.TOKEN, lambda c: c.execute(sql, (connection_id, owner)))

    # webhooks, deletions, audit ------------------------------------------------------------------
    async def first_delivery(self, provider: str, event_hash: str, now: float) -> bool:
        sql = "INSERT OR IGNORE INTO webhook_events (provider, event_hash, seen_at) VALUES (?, ?, ?)"
        return await self._write(
            schema.TOKEN, lambda c: c.execute(sql, (provider, event_hash, now)).rowcount == 1
        )

    async def insert_deletion(self, row: DeletionRow) -> None:
        await self._write(schema.TOKEN, lambda c: _insert(c, "deletions", row))

    async def get_deletion(self, provider: str, code: str) -> DeletionRow | None:
        sql = f"SELECT {_DELETION_COLS} FROM deletions WHERE provider = ? AND code = ?"
        return await self._read(schema.TOKEN, lambda c: _one(DeletionRow, c.execute(sql, (provider, code))))

    async def record_audit(self, actor: str, action: str, connection_id: int | None, now: float) -> None:
        sql = "INSERT INTO audit (at, actor, action, connection_id) VALUES (?, ?, ?, ?)"
        await self._write(schema.TOKEN, lambda c: c.execute(sql, (now, actor, action, connection_id)))

    async def list_audit(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest entries first."""
        sql = "SELECT id, at, actor, action, connection_id FROM audit ORDER BY id DESC LIMIT ?"
        keys = ("id", "at", "actor", "action", "connection_id")
        return await self._read(
            schema.TOKEN, lambda c: [dict(zip(keys, r, strict=True)) for r in c.execute(sql, (limit,))]
        )

    # key rotation ---------------------------------------------------------------------------------
    async def list_sessions(self, after_hash: str = "", limit: int = 100) -> list[SessionRow]:
        sql = f"SELECT {_SESSION_COLS} FROM sessions WHERE id_hash > ? ORDER BY id_hash LIMIT ?"
        return await self._read(
            schema.SESSION, lambda c: [SessionRow(*r) for r in c.execute(sql, (after_hash, limit))]
        )

    async def list_states(self, after_hash: str = "", limit: int = 100) -> list[StateRow]:
        sql = f"SELECT {_STATE_COLS} FROM states WHERE state_hash > ? ORDER BY state_hash LIMIT ?"
        return await self._read(
            schema.SESSION, lambda c: [StateRow(*r) for r in c.execute(sql, (after_hash, limit))]
        )

    async def rewrite_sealed(self, changes: Sequence[Reseal]) -> int:
        by_role: dict[str, list[Reseal]] = {}
        for change in changes:
            if change.column not in RESEALABLE.get(change.table, ("", ()))[1]:
                raise ValueError(f"{change.table}.{change.column} is not a sealed column")
            role = schema.SESSION if change.table in _TABLES[schema.SESSION] else schema.TOKEN
            by_role.setdefault(role, []).append(change)

        def tx(c: Conn, batch: list[Reseal]) -> int:
            written = 0
            for ch in batch:
                key_column = RESEALABLE[ch.table][0]
                sql = f"UPDATE {ch.table} SET {ch.column} = ? WHERE {key_column} = ? AND {ch.column} = ?"
                written += c.execute(sql, (ch.new, ch.key, ch.old)).rowcount
            return written

        total = 0
        for role, batch in by_role.items():
            total += await self._write(role, functools.partial(tx, batch=batch))
        return total

    # housekeeping ----------------------------------------------------------------------------------
    async def purge(self, now: float, event_ttl: float = 7 * 86400) -> dict[str, int]:
        def sessions_tx(c: Conn) -> dict[str, int]:
            return {
                table: c.execute(f"DELETE FROM {table} WHERE expires_at <= ?", (now,)).rowcount
                for table in ("sessions", "states")
            }

        counts = await self._write(schema.SESSION, sessions_tx)
        sql = "DELETE FROM webhook_events WHERE seen_at < ?"
        counts["webhook_events"] = await self._write(
            schema.TOKEN, lambda c: c.execute(sql, (now - event_ttl,)).rowcount
        )
        return counts

    async def counts(self) -> dict[str, int]:
        result: dict[str, int] = {}
        for role in schema.ROLES:
            tables = _TABLES[role]

            def count(c: Conn, tables: tuple[str, ...] = tables) -> list[int]:
                return [int(c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables]

            result.update(zip(tables, await self._read(role, count), strict=True))
        return result


# transaction bodies (run on a pool thread inside one transaction) --------------------------------
def _insert(c: Conn, table: str, row: Any) -> None:
    names = [f.name for f in fields(row)]
    values = [getattr(row, n) for n in names]
    c.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({_qs(values)})", values)


def _one(cls: Callable[..., T], cursor: sqlite3.Cursor) -> T | None:
    row = cursor.fetchone()
    return cls(*row) if row is not None else None


def _by_id(row: ConnectionRow) -> int:
    return row.id


def _connection(c: Conn, connection_id: int) -> ConnectionRow | None:
    return _one(
        ConnectionRow, c.execute(f"SELECT {_CONN_COLS} FROM connections WHERE id = ?", (connection_id,))
    )


def _delete_ids(c: Conn, ids: list[int]) -> list[ConnectionRow]:
    """Delete connections and their children; the given rows first, then the children."""
    if not ids:
        return []
    children = c.execute(
        f"DELETE FROM connections WHERE parent_id IN ({_qs(ids)}) AND id NOT IN ({_qs(ids)}) "
        f"RETURNING {_CONN_COLS}",
        [*ids, *ids],
    ).fetchall()
    parents = c.execute(
        f"DELETE FROM connections WHERE id IN ({_qs(ids)}) RETURNING {_CONN_COLS}", ids
    ).fetchall()
    return sorted(map(_row, parents), key=_by_id) + sorted(map(_row, children), key=_by_id)


def _row(values: Sequence[Any]) -> ConnectionRow:
    return ConnectionRow(*values)


def _upsert(c: Conn, w: ConnectionWrite, user_id: str, parent_id: int | None, now: float) -> int:
    """Insert or update by (provider, account_id), keeping id, user and created_at."""
    row = c.execute(
        "INSERT INTO connections (user_id, provider, account_id, parent_id, name, kind, tokens_sealed, "
        "profile_sealed, scopes, status, expires_at, refresh_expires_at, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?) "
        "ON CONFLICT (provider, account_id) DO UPDATE SET parent_id = excluded.parent_id, "
        "name = excluded.name, kind = excluded.kind, tokens_sealed = excluded.tokens_sealed, "
        "profile_sealed = excluded.profile_sealed, scopes = excluded.scopes, status = 'active', "
        "expires_at = excluded.expires_at, refresh_expires_at = excluded.refresh_expires_at, "
        "updated_at = excluded.updated_at RETURNING id",
        (
            user_id,
            w.provider,
            w.account_id,
            parent_id,
            w.name,
            w.kind,
            w.tokens_sealed,
            w.profile_sealed,
            w.scopes,
            w.expires_at,
            w.refresh_expires_at,
            now,
            now,
        ),
    ).fetchone()
    return int(row[0])


def _owner(c: Conn, provider: str, account_id: str) -> str | None:
    row = c.execute(
        "SELECT user_id FROM connections WHERE provider = ? AND account_id = ?", (provider, account_id)
    ).fetchone()
    return str(row[0]) if row is not None else None


def _save_link(
    c: Conn, account: ConnectionWrite, hashes: Sequence[str], new_user: UserRow | None, now: float
) -> LinkOutcome:
    owner_id = _owner(c, account.provider, account.account_id)
    session_user = None
    if hashes:
        sql = f"SELECT {_USER_COLS} FROM users WHERE uuid_hash IN ({_qs(hashes)}) LIMIT 1"
        session_user = _one(UserRow, c.execute(sql, list(hashes)))
    if owner_id is not None and session_user is not None and owner_id != session_user.id:
        raise AccountConflict()
    created = False
    if owner_id is not None:
        user = _one(UserRow, c.execute(f"SELECT {_USER_COLS} FROM users WHERE id = ?", (owner_id,)))
        assert user is not None  # the foreign key guarantees it
    elif session_user is not None:
        user = session_user
    elif new_user is not None:
        _insert(c, "users", new_user)
        user, created = new_user, True
    else:
        raise SessionRequired()
    primary_id = _upsert(c, account, user.id, None, now)
    ids = [primary_id]
    for child in account.children:
        if (child.provider, child.account_id) == (account.provider, account.account_id):
            raise ValueError("an account cannot be its own child")
        child_owner = _owner(c, child.provider, child.account_id)
        if child_owner is not None and child_owner != user.id:
            raise AccountConflict()
        child_id = _upsert(c, child, user.id, primary_id, now)
        if child_id not in ids:
            ids.append(child_id)
    stale = c.execute(
        f"DELETE FROM connections WHERE parent_id = ? AND id NOT IN ({_qs(ids)}) RETURNING {_CONN_COLS}",
        [primary_id, *ids],
    ).fetchall()
    rows = [_connection(c, i) for i in ids]
    return LinkOutcome(
        user=user,
        created_user=created,
        connections=[r for r in rows if r is not None],
        removed=sorted(map(_row, stale), key=_by_id),
    )
