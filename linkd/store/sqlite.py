"""The embedded SQLite backend: WAL files shared by every worker process and CLI command.

The pieces: `sqlite_engine.py` (connections, transactions and their retries, files and
migrations: durability D1, contention D3, file modes D4 are explained there),
`sqlite_tx.py` (the bodies of the multi-statement transactions), `rows.py` (column lists
and row mapping, shared with PostgreSQL) and
`sqlite_migrations.py` (the schema). This module is the `Store` interface in SQL.
"""

# ruff: noqa: S608 -- SQL text interpolates only module constants and "?" lists; values are always bound.
from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from typing import Any

from ..errors import StoreBusy
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
from .rows import (
    CONN_COLS,
    DELETION_COLS,
    SESSION_COLS,
    STATE_COLS,
    USER_COLS,
    by_id,
    check_status,
    connection,
    one,
)
from .sqlite_engine import SQLiteEngine
from .sqlite_tx import Conn, _connection, _delete_ids, _insert, _qs, _save_link

_TABLES = {
    schema.SESSION: ("sessions", "states"),
    schema.TOKEN: ("users", "connections", "webhook_events", "deletions", "audit"),
}


class SQLiteStore(SQLiteEngine, Store):
    """Sessions and states in one database, tokens and everything else in another (or one file).

    `SQLiteEngine` opens, migrates, closes and pings them; the methods here are the queries.
    """

    # sessions -------------------------------------------------------------------------------
    async def insert_session(self, row: SessionRow) -> None:
        await self._write(schema.SESSION, lambda c: _insert(c, "sessions", row))

    async def get_session(self, id_hashes: Sequence[str], now: float) -> SessionRow | None:
        if not id_hashes:
            return None
        sql = f"SELECT {SESSION_COLS} FROM sessions WHERE id_hash IN ({_qs(id_hashes)})"
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
        sql = f"DELETE FROM states WHERE state_hash IN ({_qs(state_hashes)}) RETURNING {STATE_COLS}"
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
        sql = f"SELECT {USER_COLS} FROM users WHERE uuid_hash IN ({_qs(uuid_hashes)}) LIMIT 1"
        return await self._read(schema.TOKEN, lambda c: one(UserRow, c.execute(sql, uuid_hashes)))

    async def get_user_by_id(self, user_id: str) -> UserRow | None:
        sql = f"SELECT {USER_COLS} FROM users WHERE id = ?"
        return await self._read(schema.TOKEN, lambda c: one(UserRow, c.execute(sql, (user_id,))))

    async def list_users(self, after_id: str = "", limit: int = 100) -> list[UserRow]:
        sql = f"SELECT {USER_COLS} FROM users WHERE id > ? ORDER BY id LIMIT ?"
        return await self._read(
            schema.TOKEN, lambda c: [UserRow(*r) for r in c.execute(sql, (after_id, limit))]
        )

    async def delete_user(self, user_id: str) -> list[ConnectionRow]:
        def tx(c: Conn) -> list[ConnectionRow]:
            sql = "SELECT id FROM connections WHERE user_id = ? AND parent_id IS NULL"
            removed = _delete_ids(c, [r[0] for r in c.execute(sql, (user_id,))])
            sql = f"DELETE FROM connections WHERE user_id = ? RETURNING {CONN_COLS}"  # orphans, if any
            removed += sorted(map(connection, c.execute(sql, (user_id,)).fetchall()), key=by_id)
            c.execute("DELETE FROM users WHERE id = ?", (user_id,))
            return removed

        return await self._scrubbed(await self._write(schema.TOKEN, tx))

    async def get_connection(self, connection_id: int) -> ConnectionRow | None:
        return await self._read(schema.TOKEN, lambda c: _connection(c, connection_id))

    async def find_connection(self, provider: str, account_id: str) -> ConnectionRow | None:
        sql = f"SELECT {CONN_COLS} FROM connections WHERE provider = ? AND account_id = ?"
        return await self._read(
            schema.TOKEN, lambda c: one(ConnectionRow, c.execute(sql, (provider, account_id)))
        )

    async def list_connections(self, flt: ConnectionFilter) -> list[ConnectionRow]:
        where, args = ["id > ?"], [flt.after_id]
        for column in ("provider", "status", "account_id", "user_id"):
            value = getattr(flt, column)
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = f"SELECT {CONN_COLS} FROM connections WHERE {' AND '.join(where)} ORDER BY id LIMIT ?"
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
        check_status(status)
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

    async def forget_delivery(self, provider: str, event_hash: str) -> None:
        sql = "DELETE FROM webhook_events WHERE provider = ? AND event_hash = ?"
        await self._write(schema.TOKEN, lambda c: c.execute(sql, (provider, event_hash)))

    async def insert_deletion(self, row: DeletionRow) -> None:
        await self._write(schema.TOKEN, lambda c: _insert(c, "deletions", row))

    async def get_deletion(self, provider: str, code: str) -> DeletionRow | None:
        sql = f"SELECT {DELETION_COLS} FROM deletions WHERE provider = ? AND code = ?"
        return await self._read(schema.TOKEN, lambda c: one(DeletionRow, c.execute(sql, (provider, code))))

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
        sql = f"SELECT {SESSION_COLS} FROM sessions WHERE id_hash > ? ORDER BY id_hash LIMIT ?"
        return await self._read(
            schema.SESSION, lambda c: [SessionRow(*r) for r in c.execute(sql, (after_hash, limit))]
        )

    async def list_states(self, after_hash: str = "", limit: int = 100) -> list[StateRow]:
        sql = f"SELECT {STATE_COLS} FROM states WHERE state_hash > ? ORDER BY state_hash LIMIT ?"
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
            total += await self._write(role, functools.partial(tx, batch=batch), inline=False)
        return total

    # housekeeping ----------------------------------------------------------------------------------
    async def purge(self, now: float, event_ttl: float = 7 * 86400) -> dict[str, int]:
        def sessions_tx(c: Conn) -> dict[str, int]:
            return {
                table: c.execute(f"DELETE FROM {table} WHERE expires_at <= ?", (now,)).rowcount
                for table in ("sessions", "states")
            }

        counts = await self._write(schema.SESSION, sessions_tx, inline=False)
        sql = "DELETE FROM webhook_events WHERE seen_at < ?"
        counts["webhook_events"] = await self._write(
            schema.TOKEN, lambda c: c.execute(sql, (now - event_ttl,)).rowcount, inline=False
        )
        return counts

    async def counts(self) -> dict[str, int]:
        result: dict[str, int] = {}
        for role in schema.ROLES:
            tables = _TABLES[role]

            def count(c: Conn, tables: tuple[str, ...] = tables) -> list[int]:
                return [int(c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables]

            result.update(zip(tables, await self._read(role, count, inline=False), strict=True))
        return result
