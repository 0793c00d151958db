"""Telling plugins what happened to connections, without letting a listener break a request."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .store.base import ConnectionRow

log = logging.getLogger("linkd.events")


@dataclass(frozen=True)
class ConnectionInfo:
    """A connection as plugins and the internal API see it: never a token."""

    id: int
    user_uuid: str
    provider: str
    account_id: str
    name: str
    kind: str
    parent_id: int | None
    status: str
    scopes: tuple[str, ...]
    expires_at: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_uuid": self.user_uuid,
            "provider": self.provider,
            "account_id": self.account_id,
            "name": self.name,
            "kind": self.kind,
            "parent_id": self.parent_id,
            "status": self.status,
            "scopes": list(self.scopes),
            "expires_at": self.expires_at,
        }


class Events:
    """Fires the event hooks of every plugin; a failing listener is logged, never raised."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm

    def _fire(self, hook_name: str, **kwargs: Any) -> None:
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            try:
                impl.function(**{name: kwargs[name] for name in impl.argnames})
            except Exception:
                log.exception("event listener %s of plugin %s failed", hook_name, impl.plugin_name)

    def saved(self, connection: ConnectionInfo, created: bool) -> None:
        self._fire("connection_saved", connection=connection, created=created)

    def removed(self, connection: ConnectionInfo, reason: str) -> None:
        self._fire("connection_removed", connection=connection, reason=reason)

    def needs_reconnect(self, connection: ConnectionInfo, reason: str) -> None:
        self._fire("connection_needs_reconnect", connection=connection, reason=reason)


def info_from_row(row: ConnectionRow, user_uuid: str) -> ConnectionInfo:
    """The token-free view of a stored connection."""
    return ConnectionInfo(
        id=row.id,
        user_uuid=user_uuid,
        provider=row.provider,
        account_id=row.account_id,
        name=row.name,
        kind=row.kind,
        parent_id=row.parent_id,
        status=row.status,
        scopes=tuple(s for s in row.scopes.split(",") if s),
        expires_at=row.expires_at,
    )
