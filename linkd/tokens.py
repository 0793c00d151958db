"""Usable tokens for stored connections: opened from the store, refreshed before they lapse.

A refresh is serialised through a lease in the store, so across workers and hosts
one refresh token is spent once: whoever holds the lease refreshes, the others
wait for the lease to go and read what it wrote.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable

from .crypto import Keyring
from .errors import NotFound, ReconnectRequired, StoreBusy, UnknownProvider
from .events import Events, info_from_row
from .provider import TokenSet
from .registry import Registry
from .store.base import ConnectionFilter, ConnectionRow, Store

log = logging.getLogger("linkd.tokens")


class TokenService:
    def __init__(
        self,
        registry: Registry,
        store: Store,
        keyring: Keyring,
        events: Events,
        *,
        refresh_margin: float = 300.0,
        lease_ttl: float = 30.0,
        wait_budget: float = 20.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.store = store
        self.keyring = keyring
        self.events = events
        self.refresh_margin = refresh_margin
        self.lease_ttl = lease_ttl
        self.wait_budget = wait_budget
        self.clock = clock

    def open(self, row: ConnectionRow) -> TokenSet:
        if not row.tokens_sealed:
            raise NotFound("This connection holds no token.")
        data = self.keyring.open(f"connection:{row.provider}:{row.account_id}", row.tokens_sealed)
        return TokenSet.from_json(data)

    def user_uuid(self, user_id: str, sealed: str) -> str:
        return str(self.keyring.open(f"user:{user_id}", sealed))

    def _due(self, tokens: TokenSet) -> bool:
        return tokens.expires_at is not None and tokens.expires_at - self.clock() < self.refresh_margin

    async def usable(self, connection_id: int, *, force: bool = False) -> tuple[ConnectionRow, TokenSet]:
        """The connection and a token that is valid for at least the refresh margin (refreshed if not)."""
        row = await self.store.get_connection(connection_id)
        if row is None:
            raise NotFound("No such connection.")
        if row.status == "reconnect":
            raise ReconnectRequired()
        tokens = self.open(row)
        if not (force or self._due(tokens)):
            return row, tokens
        try:
            provider = self.registry.get(row.provider)
        except UnknownProvider:
            return row, tokens
        if not provider.can_refresh(tokens):
            return row, tokens
        return await self._refresh(row, tokens, force)

    async def _refresh(
        self, row: ConnectionRow, tokens: TokenSet, force: bool
    ) -> tuple[ConnectionRow, TokenSet]:
        owner = secrets.token_hex(8)
        deadline = time.monotonic() + self.wait_budget
        delay = 0.02
        seen = row.tokens_sealed
        while True:
            if await self.store.acquire_refresh_lease(row.id, owner, self.clock(), self.lease_ttl):
                try:
                    current = await self.store.get_connection(row.id)
                    if current is None:
                        raise NotFound("No such connection.")
                    if current.status == "reconnect":
                        raise ReconnectRequired()
                    current_tokens = self.open(current)
                    if current.tokens_sealed != seen or not (force or self._due(current_tokens)):
                        return current, current_tokens  # someone else refreshed while we waited
                    return await self._spend(current, current_tokens)
                finally:
                    await self.store.release_refresh_lease(row.id, owner)
            if time.monotonic() > deadline:
                raise StoreBusy("A refresh of this connection is taking too long.")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def _spend(self, row: ConnectionRow, tokens: TokenSet) -> tuple[ConnectionRow, TokenSet]:
        provider = self.registry.get(row.provider)
        user = await self.store.get_user_by_id(row.user_id)
        user_uuid = self.user_uuid(user.id, user.uuid_sealed) if user else ""
        try:
            fresh = await provider.refresh(row.account_id, tokens)
        except ReconnectRequired:
            await self.store.set_status(row.id, "reconnect", self.clock())
            row.status = "reconnect"
            log.warning("connection %s needs reconnection: the platform refused its grant", row.id)
            self.events.needs_reconnect(info_from_row(row, user_uuid), "refresh_refused")
            raise
        if not fresh.refresh_token:
            fresh.refresh_token = tokens.refresh_token
            fresh.refresh_expires_at = fresh.refresh_expires_at or tokens.refresh_expires_at
        if not fresh.scopes:
            fresh.scopes = tokens.scopes
        sealed = self.keyring.seal(f"connection:{row.provider}:{row.account_id}", fresh.to_json())
        await self.store.update_tokens(
            row.id, sealed, fresh.expires_at, fresh.refresh_expires_at, self.clock()
        )
        updated = await self.store.get_connection(row.id)
        assert updated is not None
        self.events.saved(info_from_row(updated, user_uuid), created=False)
        return updated, fresh

    async def refresh_due(self, within: float | None = None) -> int:
        """Refresh every active connection whose token lapses within `within` seconds (background job)."""
        horizon = self.clock() + (self.refresh_margin if within is None else within)
        refreshed = 0
        after = 0
        while True:
            rows = await self.store.list_connections(
                ConnectionFilter(status="active", after_id=after, limit=200)
            )
            if not rows:
                return refreshed
            after = rows[-1].id
            for row in rows:
                if row.expires_at is None or row.expires_at > horizon:
                    continue
                try:
                    await self.usable(row.id)
                    refreshed += 1
                except Exception as exc:  # one bad connection must not stop the others
                    log.warning("background refresh of connection %s failed: %s", row.id, type(exc).__name__)
