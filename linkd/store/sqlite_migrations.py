"""The SQLite schema as ordered migrations, versioned with `PRAGMA user_version`.

Two databases, two roles: the *session* database holds short-lived browser
sessions and OAuth states (written on every login, cheap to lose on power
failure); the *token* database holds users, connections (sealed tokens), webhook
event ids, deletion requests and the audit log (fsync'd on every commit).

Each role has its own append-only list of scripts: never edit a shipped script,
append a new one. A file holding one role stores the number of scripts applied
in `user_version`. A file holding both roles (one path configured for both)
stores them in base 1000, session count first: `session + 1000 * token`, so
each list keeps growing on its own.

`migrate()` runs inside the caller's `BEGIN IMMEDIATE`, so when several
processes open a fresh database at once, exactly one applies each script and
the others see the result.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence

SESSION = "session"
TOKEN = "token"
ROLES = (SESSION, TOKEN)
_BASE = 1000

SESSION_MIGRATIONS: list[str] = [
    # 1: sessions and states; the primary keys are the lookup indexes.
    """
    CREATE TABLE sessions (
        id_hash     TEXT PRIMARY KEY,
        user_sealed TEXT,
        created_at  REAL NOT NULL,
        expires_at  REAL NOT NULL
    );
    CREATE INDEX sessions_expires_at ON sessions (expires_at);
    CREATE TABLE states (
        state_hash     TEXT PRIMARY KEY,
        session_hash   TEXT NOT NULL,
        provider       TEXT NOT NULL,
        payload_sealed TEXT NOT NULL,
        created_at     REAL NOT NULL,
        expires_at     REAL NOT NULL
    );
    CREATE INDEX states_expires_at ON states (expires_at);
    """,
]

TOKEN_MIGRATIONS: list[str] = [
    # 1: users, connections (with the refresh lease), webhook ids, deletions, audit.
    """
    CREATE TABLE users (
        id          TEXT PRIMARY KEY,
        uuid_hash   TEXT NOT NULL UNIQUE,
        uuid_sealed TEXT NOT NULL,
        created_at  REAL NOT NULL
    );
    CREATE TABLE connections (
        id                 INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id            TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        provider           TEXT NOT NULL,
        account_id         TEXT NOT NULL,
        parent_id          INTEGER REFERENCES connections (id) ON DELETE CASCADE,
        name               TEXT NOT NULL DEFAULT '',
        kind               TEXT NOT NULL DEFAULT '',
        tokens_sealed      TEXT,
        profile_sealed     TEXT,
        scopes             TEXT NOT NULL DEFAULT '',
        status             TEXT NOT NULL DEFAULT 'active',
        expires_at         REAL,
        refresh_expires_at REAL,
        refresh_owner      TEXT,
        refresh_until      REAL,
        created_at         REAL NOT NULL,
        updated_at         REAL NOT NULL
    );
    CREATE UNIQUE INDEX connections_provider_account ON connections (provider, account_id);
    CREATE INDEX connections_user_id ON connections (user_id);
    CREATE INDEX connections_parent_id ON connections (parent_id);
    CREATE INDEX connections_status ON connections (status, id);
    CREATE TABLE webhook_events (
        provider   TEXT NOT NULL,
        event_hash TEXT NOT NULL,
        seen_at    REAL NOT NULL,
        PRIMARY KEY (provider, event_hash)
    );
    CREATE INDEX webhook_events_seen_at ON webhook_events (seen_at);
    CREATE TABLE deletions (
        provider   TEXT NOT NULL,
        code       TEXT NOT NULL,
        status     TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (provider, code)
    );
    CREATE TABLE audit (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        at            REAL NOT NULL,
        actor         TEXT NOT NULL,
        action        TEXT NOT NULL,
        connection_id INTEGER
    );
    """,
]

MIGRATIONS: dict[str, list[str]] = {SESSION: SESSION_MIGRATIONS, TOKEN: TOKEN_MIGRATIONS}


class SchemaTooNew(Exception):
    """The file was migrated by a newer linkd; running older code on it would corrupt it."""


def encode(applied: dict[str, int], roles: Sequence[str]) -> int:
    """The `user_version` for these per-role counts (see the module docstring)."""
    return sum(applied[role] * _BASE**i for i, role in enumerate(roles))


def decode(user_version: int, roles: Sequence[str]) -> dict[str, int]:
    """Per-role counts of applied scripts; the last role takes whatever is left."""
    applied = {}
    for i, role in enumerate(roles):
        part = user_version // _BASE**i
        applied[role] = part if i == len(roles) - 1 else part % _BASE
    return applied


def target_version(roles: Sequence[str]) -> int:
    return encode({role: len(MIGRATIONS[role]) for role in roles}, roles)


def statements(script: str) -> Iterator[str]:
    """Split a script into complete statements (executescript would COMMIT our transaction)."""
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \t\r\n;"):
                yield buf.strip()
            buf = ""
    if buf.strip(" \t\r\n;"):
        raise ValueError("incomplete SQL statement in migration")


def migrate(conn: sqlite3.Connection, roles: Sequence[str]) -> tuple[int, int]:
    """Apply pending scripts inside the caller's write transaction; returns (from, to) versions."""
    if not conn.in_transaction:
        raise RuntimeError("migrate() needs an open BEGIN IMMEDIATE transaction")
    before = int(conn.execute("PRAGMA user_version").fetchone()[0])
    applied = decode(before, roles)
    for role in roles:
        if applied[role] > len(MIGRATIONS[role]):
            raise SchemaTooNew(f"{role} schema version {applied[role]} > {len(MIGRATIONS[role])}")
    for role in roles:
        for script in MIGRATIONS[role][applied[role] :]:
            for statement in statements(script):
                conn.execute(statement)
        applied[role] = len(MIGRATIONS[role])
    after = encode(applied, roles)
    if after != before:
        conn.execute(f"PRAGMA user_version = {int(after)}")
    return before, after
