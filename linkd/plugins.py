"""The plugin manager: hook specifications plus every plugin of the `linkd` entry-point group."""

from __future__ import annotations

from importlib import metadata

import pluggy

from . import hookspecs

ENTRY_POINT_GROUP = "linkd"


def get_plugin_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    """A fresh manager with linkd's hookspecs and the installed plugins (built-ins included)."""
    pm = pluggy.PluginManager("linkd")
    pm.add_hookspecs(hookspecs)
    if load_entry_points:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    pm.check_pending()
    return pm


def distribution_of(pm: pluggy.PluginManager, plugin: object) -> tuple[str, str]:
    """(distribution name, version) that supplied a plugin; ("-", "-") for one registered by hand."""
    for registered, dist in pm.list_plugin_distinfo():
        if registered is plugin:
            meta: metadata.PackageMetadata = dist.metadata
            return meta["Name"], dist.version
    return "-", "-"
