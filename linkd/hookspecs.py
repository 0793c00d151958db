"""The hooks linkd plugins implement. Markers and specifications, nothing else.

A plugin is a module registered under the `linkd` entry-point group; it
implements any of these with `@hookimpl`. Built-in providers use the same route in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable

    from .events import ConnectionInfo
    from .provider import Provider

hookspec = pluggy.HookspecMarker("linkd")
hookimpl = pluggy.HookimplMarker("linkd")


@hookspec
def register_providers(register: Callable[[type[Provider]], None], settings: Any) -> None:
    """Register provider classes by calling `register(ProviderClass)` once per provider.

    :param register: call it with each `Provider` subclass this plugin supplies.
        A name already taken by another plugin is refused with a clear error.
    :param settings: the validated `linkd.config.Settings` (read-only), for plugins that
        build providers from configuration (e.g. TOML definitions in `LINKD_PROVIDERS_DIR`).

    Every implementation is called; results are not collected.
    """


@hookspec
def connection_saved(connection: ConnectionInfo, created: bool) -> None:
    """Called after a connection was committed: a completed connect or a refresh of its grant.

    :param connection: what was stored (no token).
    :param created: True the first time this account is linked.

    Called for every listener after the response's data is durable; an exception
    raised here is logged and never reaches the person in the browser.
    """


@hookspec
def connection_removed(connection: ConnectionInfo, reason: str) -> None:
    """Called after a connection was deleted.

    :param reason: ``"disconnect"``, ``"uninstalled"``, ``"deauthorized"``,
        ``"data_deletion"``, ``"replaced"`` (a sub-account the platform no longer lists)
        or ``"user_deleted"``.
    """


@hookspec
def connection_needs_reconnect(connection: ConnectionInfo, reason: str) -> None:
    """Called when a connection's grant failed for good (refresh refused, token revoked).

    The connection is marked ``reconnect``; the person must connect the account again.
    """
