"""The bodies of the SQLite store's transactions: plain functions of a connection.

Each runs inside the one transaction `SQLiteEngine` opened, inline or on a pool thread
(and is retried as a whole while the database is locked), so none of them commits.
"""

# ruff: noqa: S608 -- SQL text interpolates only module constants and "?" lists; values are always bound.
from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, TypeVar

from ..errors import AccountConflict, SessionRequired
from .base import ConnectionRow, ConnectionWrite, LinkOutcome, UserRow
from .rows import CONN_COLS, USER_COLS, by_id, connection, insert, one

T = TypeVar("T")
Conn = sqlite3.Connection


def _qs(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


def _insert(c: Conn, table: str, row: Any) -> None:
    c.execute(*insert(table, row, "?"))


def _connection(c: Conn, connection_id: int) -> ConnectionRow | None:
    return one(
        ConnectionRow, c.execute(f"SELECT {CONN_COLS} FROM connections WHERE id = ?", (connection_id,))
    )


def _delete_ids(c: Conn, ids: list[int]) -> list[ConnectionRow]:
    """Delete connections and their children; the given rows first, then the children."""
    if not ids:
        return []
    children = c.execute(
        f"DELETE FROM connections WHERE parent_id IN ({_qs(ids)}) AND id NOT IN ({_qs(ids)}) "
        f"RETURNING {CONN_COLS}",
        [*ids, *ids],
    ).fetchall()
    parents = c.execute(
        f"DELETE FROM connections WHERE id IN ({_qs(ids)}) RETURNING {CONN_COLS}", ids
    ).fetchall()
    return sorted(map(connection, parents), key=by_id) + sorted(map(connection, children), key=by_id)


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
        w.row_values(user_id, parent_id, now),
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
        sql = f"SELECT {USER_COLS} FROM users WHERE uuid_hash IN ({_qs(hashes)}) LIMIT 1"
        session_user = one(UserRow, c.execute(sql, list(hashes)))
    if owner_id is not None and session_user is not None and owner_id != session_user.id:
        raise AccountConflict()
    created = False
    if owner_id is not None:
        user = one(UserRow, c.execute(f"SELECT {USER_COLS} FROM users WHERE id = ?", (owner_id,)))
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
        f"DELETE FROM connections WHERE parent_id = ? AND id NOT IN ({_qs(ids)}) RETURNING {CONN_COLS}",
        [primary_id, *ids],
    ).fetchall()
    rows = [_connection(c, i) for i in ids]
    return LinkOutcome(
        user=user,
        created_user=created,
        connections=[r for r in rows if r is not None],
        removed=sorted(map(connection, stale), key=by_id),
    )
