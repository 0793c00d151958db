"""The plugin system: entry-point discovery, the registry's rules, and events (hookspecs.py)."""

from __future__ import annotations

import json
import types
from typing import Any

import pytest

from linkd import Provider, hookimpl
from linkd.config import settings_from_env
from linkd.errors import PluginError, UnknownProvider
from linkd.plugins import get_plugin_manager
from linkd.registry import Registry

from .browser import Browser
from .conftest import linkd_cli

SECRET = "k3Jr9vXq2LmP8sTzW4nB6yHc1dFgA5eR7uIoQ0wE"


def settings(**env: str) -> Any:
    return settings_from_env({"STATE_TOKEN_SECRET": SECRET, **env})


def plugin_with(*classes: type[Provider], name: str = "p") -> types.ModuleType:
    module = types.ModuleType(name)

    @hookimpl
    def register_providers(register: Any) -> None:
        for cls in classes:
            register(cls)

    module.register_providers = register_providers  # type: ignore[attr-defined]
    return module


def provider_class(provider_name: str) -> type[Provider]:
    return type(f"P_{provider_name}", (Provider,), {"name": provider_name})


def test_installed_plugin_is_listed_with_its_distribution(tmp_path: Any) -> None:
    result = linkd_cli("providers", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["example"]["distribution"] == "linkd-example" and rows["example"]["version"] == "1.2.3"
    assert rows["example"]["enabled"] is False
    assert "EXAMPLE_CLIENT_ID is not set" in rows["example"]["missing"]
    assert rows["shopify"]["distribution"] == "linkd" and rows["facebook"]["distribution"] == "linkd"
    table = linkd_cli("providers", cwd=tmp_path).stdout
    assert "linkd-example 1.2.3" in table and "shopify" in table and "facebook" in table


def test_builtins_come_through_the_same_entry_point_group() -> None:
    pm = get_plugin_manager()
    names = {dist.project_name for _, dist in pm.list_plugin_distinfo()}
    assert {"linkd", "linkd-example"} <= names
    registry = Registry.discover(pm, settings())
    assert {"shopify", "facebook", "example"} <= set(registry.entries)


def test_duplicate_names_are_refused_naming_both_plugins() -> None:
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(plugin_with(provider_class("dup")), name="first")
    pm.register(plugin_with(provider_class("dup")), name="second")
    with pytest.raises(PluginError, match=r"'dup' is registered twice \(plugins first and second\)"):
        Registry.discover(pm, settings())


@pytest.mark.parametrize(
    "bad", ["", "Upper", "has space", "api", "healthz", "logout", "../x", "x" * 40, "_sandbox"]
)
def test_bad_or_reserved_names_are_refused(bad: str) -> None:
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(plugin_with(provider_class(bad)))
    with pytest.raises(PluginError):
        Registry.discover(pm, settings())


def test_registering_something_that_is_not_a_provider_is_refused() -> None:
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(plugin_with(object))  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="not a Provider subclass"):
        Registry.discover(pm, settings())


def test_unknown_or_disabled_names_are_404() -> None:
    pm = get_plugin_manager()
    registry = Registry.discover(pm, settings())
    for name in ("nosuch", "example", "SHOPIFY"):
        with pytest.raises(UnknownProvider):
            registry.get(name)


def test_event_listeners_hear_saved_connections_and_a_failing_one_breaks_nothing(make_world: Any) -> None:
    world = make_world(LINKD_PROVIDERS="example")
    heard: list[tuple[str, Any]] = []
    listener = types.ModuleType("listener")

    @hookimpl
    def connection_saved(connection: Any, created: bool) -> None:
        heard.append(("saved", connection, created))

    @hookimpl
    def connection_removed(connection: Any) -> None:
        raise RuntimeError("a broken listener")

    listener.connection_saved = connection_saved  # type: ignore[attr-defined]
    listener.connection_removed = connection_removed  # type: ignore[attr-defined]
    assert world.services is not None
    world.services.pm.register(listener)
    response = Browser("application/json").follow(world.url + "/example/login")
    assert response.status == 200
    assert len(heard) == 1
    _, connection, created = heard[0]
    assert (
        created and connection.provider == "example" and connection.user_uuid == response.json()["user_uuid"]
    )
    assert "token" not in json.dumps(connection.to_json()).lower().replace("_token", "")
    rows = world.run(lambda: world.services.store.delete_connections("example", ["user-1"]))
    world.run(lambda: world.services.announce_removed(rows, "disconnect"))  # the broken listener is logged
