"""What operators and downstream services do with what was linked: look, read a token, disconnect, export.

The internal API (`api.py`) and the CLI (`cli.py`) are two faces of these use-cases;
both name an `actor` (a label, never a credential) that the audit log records.
Views are token-free (`linkd.events.ConnectionInfo`) except `token()`, which is
audited before it returns. Key rotation has a module of its own (`rotation.py`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .crypto import USER_INDEX
from .errors import BadRequest, NotFound, UnknownProvider
from .events import info_from_row
from .provider import Provider
from .service import Services
from .store.base import ConnectionFilter, ConnectionRow, UserRow

log = logging.getLogger("linkd.admin")
UUID_FORMAT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
ID_FORMAT = re.compile(r"[0-9]{1,18}")
STATUSES = ("active", "reconnect")
MAX_PAGE = 500


def parse_uuid(value: str) -> str:
    """A user UUID in canonical form (lower case), or a 400 before anything is looked up."""
    if not UUID_FORMAT.fullmatch(value):
        raise BadRequest("The user id is not a UUID.")
    return value.lower()


def parse_connection_id(value: str) -> int:
    if not ID_FORMAT.fullmatch(value):
        raise BadRequest("A connection id is a positive whole number.")
    return int(value)


def mask(token: str) -> str:
    """Enough to tell two tokens apart by eye, never enough to use one."""
    return (token[:4] if len(token) >= 20 else "") + f"... ({len(token)} chars)"


@dataclass
class Removal:
    """What a disconnect did: the rows deleted and where revoking at the platform worked."""

    removed: list[dict[str, Any]] = field(default_factory=list)
    revoked: list[int] = field(default_factory=list)
    revoke_failed: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"removed": self.removed, "revoked": self.revoked, "revoke_failed": self.revoke_failed}


class Admin:
    def __init__(self, services: Services, actor: str, clock: Callable[[], float] = time.time) -> None:
        self.services = services
        self.store = services.store
        self.actor = actor
        self.clock = clock
        self._uuids: dict[str, str] = {}

    # looking --------------------------------------------------------------------------------
    async def find_user(self, user_uuid: str) -> UserRow:
        user = await self.store.get_user(self.services.keyring.digests(USER_INDEX, parse_uuid(user_uuid)))
        if user is None:
            raise NotFound("No such user.")
        return user

    def _uuid(self, user: UserRow) -> str:
        if user.id not in self._uuids:
            self._uuids[user.id] = self.services.user_uuid_of(user.id, user.uuid_sealed)
        return self._uuids[user.id]

    async def view(self, row: ConnectionRow) -> dict[str, Any]:
        """The token-free view of a connection (`ConnectionInfo.to_json()`)."""
        if row.user_id not in self._uuids:
            user = await self.store.get_user_by_id(row.user_id)
            self._uuids[row.user_id] = self._uuid(user) if user else ""
        return info_from_row(row, self._uuids[row.user_id]).to_json()

    async def _all(self, flt: ConnectionFilter) -> AsyncIterator[ConnectionRow]:
        while True:
            rows = await self.store.list_connections(flt)
            for row in rows:
                yield row
            if len(rows) < flt.limit:
                return
            flt = ConnectionFilter(**{**flt.__dict__, "after_id": rows[-1].id})

    async def _rows_of(self, user: UserRow) -> list[ConnectionRow]:
        return [r async for r in self._all(ConnectionFilter(user_id=user.id, limit=MAX_PAGE))]

    async def user(self, user_uuid: str) -> dict[str, Any]:
        user = await self.find_user(user_uuid)
        rows = await self._rows_of(user)
        return {
            "uuid": self._uuid(user),
            "created_at": user.created_at,
            "connections": [await self.view(r) for r in rows],
        }

    async def users(self) -> list[dict[str, Any]]:
        """Every user with the number of their connections (for the CLI)."""
        out: list[dict[str, Any]] = []
        after = ""
        while page := await self.store.list_users(after_id=after, limit=MAX_PAGE):
            for user in page:
                count = len(await self._rows_of(user))
                out.append({"uuid": self._uuid(user), "created_at": user.created_at, "connections": count})
            after = page[-1].id
        return out

    async def connections(
        self,
        *,
        provider: str | None = None,
        status: str | None = None,
        account: str | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """One page of connections in id order and the cursor of the next page (None on the last)."""
        if status is not None and status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}.")
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit must be from 1 to {MAX_PAGE}.")
        flt = ConnectionFilter(
            provider=provider, status=status, account_id=account, after_id=after, limit=limit + 1
        )
        rows = await self.store.list_connections(flt)
        more = len(rows) > limit
        rows = rows[:limit]
        return [await self.view(r) for r in rows], (rows[-1].id if more else None)

    async def all_connections(self, **filters: Any) -> list[dict[str, Any]]:
        flt = ConnectionFilter(limit=MAX_PAGE, **filters)
        if flt.status is not None and flt.status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}.")
        return [await self.view(r) async for r in self._all(flt)]

    async def connection(self, connection_id: int) -> dict[str, Any]:
        row = await self.store.get_connection(connection_id)
        if row is None:
            raise NotFound("No such connection.")
        return await self.view(row)

    # the one place a token leaves linkd ---------------------------------------------------------
    async def token(self, connection_id: int, action: str = "token_read") -> dict[str, Any]:
        """A usable access token (refreshed first when due); the read is audited before it returns."""
        row, tokens = await self.services.tokens.usable(connection_id)
        await self.store.record_audit(self.actor, action, row.id, self.clock())
        return {
            "connection_id": row.id,
            "provider": row.provider,
            "account_id": row.account_id,
            "access_token": tokens.access_token,
            "token_type": tokens.token_type,
            "expires_at": tokens.expires_at,
            "scopes": list(tokens.scopes),
        }

    # removing -----------------------------------------------------------------------------------
    async def disconnect(self, connection_id: int, *, revoke: bool = True) -> Removal:
        """Revoke at the platform (best effort), delete the connection and its children, tell plugins."""
        row = await self.store.get_connection(connection_id)
        if row is None:
            raise NotFound("No such connection.")
        children = [r async for r in self._all(ConnectionFilter(user_id=row.user_id, limit=MAX_PAGE))]
        doomed = [row, *(r for r in children if r.parent_id == row.id)]
        return await self._remove(doomed, revoke, lambda: self.store.delete_connection(row.id), "disconnect")

    async def delete_user(self, user_uuid: str, *, revoke: bool = True) -> Removal:
        user = await self.find_user(user_uuid)
        doomed = await self._rows_of(user)
        return await self._remove(doomed, revoke, lambda: self.store.delete_user(user.id), "user_deleted")

    async def _remove(
        self, doomed: Sequence[ConnectionRow], revoke: bool, delete: Callable[[], Any], reason: str
    ) -> Removal:
        result = Removal()
        for row in doomed:
            await self.view(row)  # learn the user's UUID while the user row still exists
        for row in doomed if revoke else ():
            outcome = await self._revoke(row)
            if outcome is not None:
                (result.revoked if outcome else result.revoke_failed).append(row.id)
        rows: list[ConnectionRow] = await delete()
        for r in rows:
            await self.store.record_audit(self.actor, reason, r.id, self.clock())
        result.removed = [await self.view(r) for r in rows]
        for r in rows:  # as Services.announce_removed, with the UUID read before the user row went
            self.services.events.removed(info_from_row(r, self._uuids.get(r.user_id, "")), reason)
        return result

    async def _revoke(self, row: ConnectionRow) -> bool | None:
        """True when the platform took the revocation, False when it failed, None when not attempted."""
        try:
            provider = self.services.registry.get(row.provider)
        except UnknownProvider:
            return None
        if type(provider).revoke is Provider.revoke or not row.tokens_sealed:
            return None
        try:
            await provider.revoke(row.account_id, self.services.tokens.open(row))
        except Exception as exc:  # best effort: the local delete happens whatever the platform says
            log.warning("revoking connection %s at %s failed: %s", row.id, row.provider, type(exc).__name__)
            return False
        log.info("revoked connection %s at %s", row.id, row.provider)
        return True

    # data requests --------------------------------------------------------------------------------
    async def export(self, user_uuid: str) -> dict[str, Any]:
        """Everything held about a user, without tokens: the user, each connection and its profile."""
        user = await self.find_user(user_uuid)
        keyring = self.services.keyring
        connections = []
        for row in await self._rows_of(user):
            item = await self.view(row)
            row_key = f"connection:{row.provider}:{row.account_id}:profile"
            item["profile"] = keyring.open(row_key, row.profile_sealed) if row.profile_sealed else {}
            item.update(
                refresh_expires_at=row.refresh_expires_at,
                created_at=row.created_at,
                updated_at=row.updated_at,
                has_token=row.tokens_sealed is not None,
            )
            connections.append(item)
        await self.store.record_audit(self.actor, "export", None, self.clock())
        return {
            "user": {"uuid": self._uuid(user), "created_at": user.created_at},
            "connections": connections,
            "not_included": [
                "access and refresh tokens (held sealed; never exported)",
                "browser sessions (they hold the UUID sealed and expire after LINKD_SESSION_TTL)",
            ],
        }
