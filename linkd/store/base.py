"""The storage interface every backend implements, and the guarantees it owes.

The store keeps rows; it never sees a plaintext token or user UUID. Callers
(`sessions.py`, `linking.py`, `tokens.py`) hash lookup keys and seal secret values
with the `Keyring` before they reach a backend, so SQLite files and PostgreSQL
tables hold only keyed hashes and ciphertexts.

Guarantees (tested against every backend by `tests/test_store.py`):

- Atomicity: each method is one transaction. `consume_state` deletes and returns
  in one statement, so a state is consumed once across threads, processes and hosts.
  `save_link` writes the user, the connection and its children together or not at all.
- Durability: a method that returned has committed (token writes fsync'd).
- Contention: a busy database is waited for and retried inside the method; past
  the wait budget it raises `StoreBusy` (mapped to 503 with Retry-After).
- Serialised refresh: `acquire_refresh_lease` grants at most one holder per
  connection at a time, across processes and hosts, until released or expired.
- Nothing here waits on the event loop: whatever can wait for a lock, a network or an fsync
  runs in threads or async drivers. (SQLite runs reads and short session writes on the
  calling thread with busy_timeout 0: done at once, or handed to a thread untried.)
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SessionRow:
    id_hash: str  # keyed hash of the cookie value
    user_sealed: str | None  # the user UUID sealed for "session:{id_hash}"
    created_at: float
    expires_at: float


@dataclass
class StateRow:
    state_hash: str  # keyed hash of the state value
    session_hash: str
    provider: str
    payload_sealed: str  # context + PKCE verifier sealed for "state:{state_hash}"
    created_at: float
    expires_at: float


@dataclass
class UserRow:
    id: str  # random row id (never the UUID itself)
    uuid_hash: str  # keyed hash of the UUID, for lookups
    uuid_sealed: str  # the UUID sealed for "user:{id}"
    created_at: float


@dataclass
class ConnectionWrite:
    """One account to insert or update by (provider, account_id)."""

    provider: str
    account_id: str
    name: str
    kind: str
    tokens_sealed: str | None  # TokenSet sealed for "connection:{provider}:{account_id}"
    profile_sealed: str | None
    scopes: str
    expires_at: float | None
    refresh_expires_at: float | None
    children: list[ConnectionWrite] = field(default_factory=list)

    def row_values(self, user_id: str, parent_id: int | None, now: float) -> tuple[Any, ...]:
        """The values of an inserted row, in the column order both backends use: user_id, provider,
        account_id, parent_id, name, kind, tokens_sealed, profile_sealed, scopes, expires_at,
        refresh_expires_at, created_at, updated_at."""
        return (
            user_id,
            self.provider,
            self.account_id,
            parent_id,
            self.name,
            self.kind,
            self.tokens_sealed,
            self.profile_sealed,
            self.scopes,
            self.expires_at,
            self.refresh_expires_at,
            now,
            now,
        )


@dataclass
class ConnectionRow:
    id: int
    user_id: str
    provider: str
    account_id: str
    parent_id: int | None
    name: str
    kind: str
    tokens_sealed: str | None
    profile_sealed: str | None
    scopes: str
    status: str  # "active" | "reconnect"
    expires_at: float | None
    refresh_expires_at: float | None
    created_at: float
    updated_at: float


@dataclass
class LinkOutcome:
    user: UserRow
    created_user: bool
    connections: list[ConnectionRow]  # the primary first, then its children
    removed: list[ConnectionRow]  # children that the platform no longer lists


@dataclass
class ConnectionFilter:
    provider: str | None = None
    status: str | None = None
    account_id: str | None = None
    user_id: str | None = None
    after_id: int = 0
    limit: int = 100


@dataclass(frozen=True)
class Reseal:
    """One cell rewritten by key rotation, only while it still holds `old` (compare-and-set).

    `key` is the row's primary key (`users.id`, `connections.id`, `sessions.id_hash`,
    `states.state_hash`); `column` one of `RESEALABLE[table]`.
    """

    table: str
    key: str | int
    column: str
    old: str
    new: str


# table -> (primary key column, the columns key rotation may rewrite)
RESEALABLE: dict[str, tuple[str, tuple[str, ...]]] = {
    "users": ("id", ("uuid_hash", "uuid_sealed")),
    "connections": ("id", ("tokens_sealed", "profile_sealed")),
    "sessions": ("id_hash", ("user_sealed",)),
    "states": ("state_hash", ("payload_sealed",)),
}


@dataclass
class DeletionRow:
    code: str
    provider: str
    status: str
    created_at: float


class Store(abc.ABC):
    """One storage backend: sessions, states, users, connections and their housekeeping."""

    # (version before, version after) of the migrations `open()` applied; equal when the schema
    # was current. `linkd check` reports it, so an old schema is said, not silently upgraded.
    schema_change: tuple[int, int] = (0, 0)

    # lifecycle --------------------------------------------------------------------
    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and apply pending migrations (safe when several processes start at once)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailable unless every database answers a read, quickly."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the data lives, safe to log (no password)."""

    # sessions -----------------------------------------------------------------------
    @abc.abstractmethod
    async def insert_session(self, row: SessionRow) -> None: ...

    @abc.abstractmethod
    async def get_session(self, id_hashes: Sequence[str], now: float) -> SessionRow | None:
        """The live session with any of these hashes; an expired one is deleted and None returned."""

    @abc.abstractmethod
    async def replace_session(self, old_hash: str | None, new: SessionRow | None) -> None:
        """Delete the old row and insert the new one in one transaction (rotation, logout)."""

    # states ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def insert_state(self, row: StateRow) -> None: ...

    @abc.abstractmethod
    async def consume_state(self, state_hashes: Sequence[str]) -> StateRow | None:
        """Atomically delete and return the state (DELETE … RETURNING); None when absent.

        An expired row is deleted and returned like any other: the caller refuses it by
        `expires_at`, so an expired state is both refused and purged in one step.
        """

    # users and connections ---------------------------------------------------------------
    @abc.abstractmethod
    async def save_link(
        self,
        account: ConnectionWrite,
        session_uuid_hashes: Sequence[str],
        new_user: UserRow | None,
        now: float,
    ) -> LinkOutcome:
        """Store a completed connect in one transaction.

        The user is, in order: the one already holding (provider, account_id); the
        session's user (found by `session_uuid_hashes`); `new_user` (inserted). When
        the account belongs to another user than the session's, raise AccountConflict;
        when there is no user and `new_user` is None, raise SessionRequired.
        """

    @abc.abstractmethod
    async def get_user(self, uuid_hashes: Sequence[str]) -> UserRow | None: ...

    @abc.abstractmethod
    async def get_user_by_id(self, user_id: str) -> UserRow | None: ...

    @abc.abstractmethod
    async def list_users(self, after_id: str = "", limit: int = 100) -> list[UserRow]: ...

    @abc.abstractmethod
    async def delete_user(self, user_id: str) -> list[ConnectionRow]:
        """Delete the user and every connection; returns the connections removed."""

    @abc.abstractmethod
    async def get_connection(self, connection_id: int) -> ConnectionRow | None: ...

    @abc.abstractmethod
    async def find_connection(self, provider: str, account_id: str) -> ConnectionRow | None: ...

    @abc.abstractmethod
    async def list_connections(self, flt: ConnectionFilter) -> list[ConnectionRow]:
        """Connections matching the filter, ordered by id, after `flt.after_id`."""

    @abc.abstractmethod
    async def update_tokens(
        self,
        connection_id: int,
        tokens_sealed: str,
        expires_at: float | None,
        refresh_expires_at: float | None,
        now: float,
    ) -> None:
        """Store refreshed tokens (durably) and mark the connection active."""

    @abc.abstractmethod
    async def set_status(self, connection_id: int, status: str, now: float) -> None:
        """Set "active" or "reconnect" (anything else is a ValueError)."""

    @abc.abstractmethod
    async def delete_connections(self, provider: str, account_ids: Sequence[str]) -> list[ConnectionRow]:
        """Delete these accounts and their children; returns the rows removed (parents first)."""

    @abc.abstractmethod
    async def delete_connection(self, connection_id: int) -> list[ConnectionRow]:
        """Delete one connection and its children; returns the rows removed."""

    # refresh serialisation -----------------------------------------------------------------
    @abc.abstractmethod
    async def acquire_refresh_lease(self, connection_id: int, owner: str, now: float, ttl: float) -> bool:
        """Take the connection's refresh lease if free or expired; True when taken.

        Strictly "free or expired → take": even the holder cannot take it a second time.
        """

    @abc.abstractmethod
    async def release_refresh_lease(self, connection_id: int, owner: str) -> None: ...

    # webhooks, deletions, audit ------------------------------------------------------------
    @abc.abstractmethod
    async def first_delivery(self, provider: str, event_hash: str, now: float) -> bool:
        """Record a webhook event id; True when it had not been seen."""

    @abc.abstractmethod
    async def forget_delivery(self, provider: str, event_hash: str) -> None:
        """Un-record an event whose handling failed, so the platform's retry is processed."""

    @abc.abstractmethod
    async def insert_deletion(self, row: DeletionRow) -> None: ...

    @abc.abstractmethod
    async def get_deletion(self, provider: str, code: str) -> DeletionRow | None: ...

    @abc.abstractmethod
    async def record_audit(self, actor: str, action: str, connection_id: int | None, now: float) -> None: ...

    @abc.abstractmethod
    async def list_audit(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest audit entries first."""

    # key rotation ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def list_sessions(self, after_hash: str = "", limit: int = 100) -> list[SessionRow]:
        """Sessions ordered by `id_hash`, after `after_hash`, expired ones included (key rotation)."""

    @abc.abstractmethod
    async def list_states(self, after_hash: str = "", limit: int = 100) -> list[StateRow]:
        """States ordered by `state_hash`, after `after_hash`, expired ones included (key rotation)."""

    @abc.abstractmethod
    async def rewrite_sealed(self, changes: Sequence[Reseal]) -> int:
        """Apply key-rotation rewrites in one short transaction per database; returns cells written.

        Each cell is compare-and-set: one that no longer holds `change.old` (a refresh
        wrote new tokens meanwhile, a state was consumed) is left alone and not counted.
        A table or column outside `RESEALABLE` raises ValueError before anything is written.
        """

    # housekeeping ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def purge(self, now: float, event_ttl: float = 7 * 86400) -> dict[str, int]:
        """Delete expired sessions, states and old webhook event ids; returns counts."""

    @abc.abstractmethod
    async def counts(self) -> dict[str, int]:
        """Rows per table (for `check`, migrations and tests)."""
