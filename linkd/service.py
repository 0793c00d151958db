"""Wiring: from validated settings to the objects a running linkd uses.

Nothing is built at import time; `build_services` makes a fresh world each call,
so every test and every worker process gets its own.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pluggy

from .config import Settings
from .crypto import Keyring
from .errors import ConfigError
from .events import Events, info_from_row
from .linking import Linker
from .plugins import get_plugin_manager
from .registry import Registry
from .sessions import SessionManager, StateManager
from .store.base import ConnectionRow, DeletionRow, Store
from .tokens import TokenService
from .upstream import Upstream


@dataclass
class Services:
    settings: Settings
    pm: pluggy.PluginManager
    keyring: Keyring
    store: Store
    registry: Registry
    upstream: Upstream
    events: Events
    sessions: SessionManager
    states: StateManager
    linker: Linker
    tokens: TokenService

    async def close(self) -> None:
        self.upstream.close()
        await self.store.close()

    def user_uuid_of(self, user_id: str, uuid_sealed: str) -> str:
        return str(self.keyring.open(f"user:{user_id}", uuid_sealed))

    async def uuid_for_row(self, row: ConnectionRow) -> str:
        user = await self.store.get_user_by_id(row.user_id)
        return self.user_uuid_of(user.id, user.uuid_sealed) if user else ""

    async def announce_removed(self, rows: Sequence[ConnectionRow], reason: str) -> None:
        for row in rows:
            self.events.removed(info_from_row(row, await self.uuid_for_row(row)), reason)


def make_store(settings: Settings) -> Store:
    """The backend the settings ask for: PostgreSQL when `LINKD_DATABASE_URL` is set, else SQLite files."""
    if settings.database_url:
        try:
            from .store.postgresql import PostgreSQLStore  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise ConfigError(
                ["LINKD_DATABASE_URL needs the PostgreSQL extra: pip install 'linkd[postgresql]'"]
            ) from exc
        return PostgreSQLStore(settings.database_url)  # type: ignore[no-any-return,unused-ignore]
    from .store.sqlite import SQLiteStore

    return SQLiteStore(settings.session_db_path, settings.token_db_path)


def discover(
    settings: Settings, pm: pluggy.PluginManager | None = None
) -> tuple[pluggy.PluginManager, Registry]:
    pm = pm or get_plugin_manager()
    return pm, Registry.discover(pm, settings)


async def build_services(
    settings: Settings,
    *,
    pm: pluggy.PluginManager | None = None,
    store: Store | None = None,
    upstream: Upstream | None = None,
) -> Services:
    """Open the store and build every service; call inside the event loop that will serve."""
    pm, registry = discover(settings, pm)
    registry.check(settings)
    keyring = Keyring(settings.secret, settings.previous_secrets)
    store = store or make_store(settings)
    await store.open()
    upstream = upstream or Upstream(settings.upstream_timeout)
    registry.instantiate(settings, upstream)
    events = Events(pm)
    sessions = SessionManager(store, keyring, settings.session_ttl)
    states = StateManager(store, keyring, settings.state_ttl)
    return Services(
        settings=settings,
        pm=pm,
        keyring=keyring,
        store=store,
        registry=registry,
        upstream=upstream,
        events=events,
        sessions=sessions,
        states=states,
        linker=Linker(registry, store, keyring, sessions, states, events),
        tokens=TokenService(registry, store, keyring, events),
    )


class CoreWebhookActions:
    """What a provider's webhook may do, scoped to that provider (see `linkd.provider.WebhookActions`)."""

    def __init__(self, services: Services, provider: str) -> None:
        self.services = services
        self.provider = provider
        self.recorded: list[str] = []

    async def first_delivery(self, event_id: str) -> bool:
        digest = hashlib.sha256(event_id.encode("utf-8", "replace")).hexdigest()
        first = await self.services.store.first_delivery(self.provider, digest, time.time())
        if first:
            self.recorded.append(digest)
        return first

    async def rollback(self) -> None:
        """Forget the events recorded by a delivery whose handling failed: the platform will retry."""
        for digest in self.recorded:
            await self.services.store.forget_delivery(self.provider, digest)
        self.recorded.clear()

    async def remove_accounts(self, account_ids: Sequence[str], reason: str = "uninstalled") -> int:
        rows = await self._delete(account_ids)
        await self.services.announce_removed(rows, reason)
        return len(rows)

    async def _delete(self, account_ids: Sequence[str]) -> list[ConnectionRow]:
        return await self.services.store.delete_connections(self.provider, list(account_ids))

    async def create_deletion_request(self, account_ids: Sequence[str]) -> tuple[str, str]:
        rows = await self._delete(account_ids)
        await self.services.announce_removed(rows, "data_deletion")
        code = secrets.token_hex(10)
        await self.services.store.insert_deletion(DeletionRow(code, self.provider, "completed", time.time()))
        return code, f"{self.services.settings.public_url}/{self.provider}/deletion/{code}"
