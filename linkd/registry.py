"""Which providers exist, which are enabled, and the lookup from a URL segment to one of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pluggy

from .errors import ConfigError, PluginError, UnknownProvider
from .plugins import distribution_of
from .provider import NAME_PATTERN, RESERVED_NAMES, Provider, ProviderContext

if TYPE_CHECKING:
    from .config import Settings
    from .upstream import Upstream


@dataclass
class ProviderEntry:
    """One discovered provider: where it came from, its settings, whether it runs."""

    cls: type[Provider]
    plugin: str
    distribution: str
    version: str
    values: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    enabled: bool = False
    ends_session: bool = False
    instance: Provider | None = None

    @property
    def name(self) -> str:
        return self.cls.name


class Registry:
    """Name → provider, built from every plugin's `register_providers` hook."""

    def __init__(self, entries: list[ProviderEntry]) -> None:
        self.entries = {entry.name: entry for entry in entries}

    @classmethod
    def discover(cls, pm: pluggy.PluginManager, settings: Settings) -> Registry:
        """Collect provider classes; a bad or duplicate name is refused with the plugins named."""
        entries: list[ProviderEntry] = []
        seen: dict[str, ProviderEntry] = {}
        for impl in pm.hook.register_providers.get_hookimpls():
            distribution, version = distribution_of(pm, impl.plugin)

            def register(
                provider_cls: type[Provider],
                _plugin: str = impl.plugin_name,
                _d: str = distribution,
                _v: str = version,
            ) -> None:
                if not (isinstance(provider_cls, type) and issubclass(provider_cls, Provider)):
                    raise PluginError(
                        f"plugin {_plugin} registered {provider_cls!r}, which is not a Provider subclass"
                    )
                name = getattr(provider_cls, "name", "")
                if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name in RESERVED_NAMES:
                    raise PluginError(f"plugin {_plugin}: provider name {name!r} is not allowed")
                if name in seen:
                    raise PluginError(
                        f"provider name {name!r} is registered twice "
                        f"(plugins {seen[name].plugin} and {_plugin})"
                    )
                entry = ProviderEntry(provider_cls, _plugin, _d, _v)
                seen[name] = entry
                entries.append(entry)

            kwargs = {"register": register, "settings": settings}
            impl.function(**{name: kwargs[name] for name in impl.argnames})
        registry = cls(entries)
        registry._evaluate(settings)
        return registry

    def _evaluate(self, settings: Settings) -> None:
        for entry in self.entries.values():
            entry.values = {s.name: settings.env.get(s.name) or (s.default or "") for s in entry.cls.settings}
            entry.problems = entry.cls.setting_problems(settings.env)
            wanted = settings.providers is None or entry.name in settings.providers
            entry.enabled = wanted and not entry.problems
            if settings.end_session_after is not None:
                entry.ends_session = entry.name in settings.end_session_after
            else:
                entry.ends_session = entry.cls.ends_session

    def startup_problems(self, settings: Settings) -> list[str]:
        """Problems that make `serve` refuse to start: enabled by name but unusable or unknown."""
        problems = []
        for name in settings.providers or ():
            if name not in self.entries:
                problems.append(f"LINKD_PROVIDERS names {name!r}, which no installed plugin provides")
            else:
                problems.extend(f"{p} (provider {name})" for p in self.entries[name].problems)
        return problems

    def check(self, settings: Settings) -> None:
        problems = self.startup_problems(settings)
        if problems:
            raise ConfigError(problems)

    def instantiate(self, settings: Settings, upstream: Upstream) -> None:
        """Build an instance of every enabled provider (call once, inside the serving loop)."""
        for entry in self.entries.values():
            if not entry.enabled:
                continue
            redirect = entry.values.get(entry.cls.redirect_uri_setting or "") or settings.env.get(
                entry.cls.redirect_uri_setting or "", ""
            )
            context = ProviderContext(
                settings=dict(entry.values),
                redirect_uri=redirect or f"{settings.public_url}/{entry.name}/callback",
                public_url=settings.public_url,
                upstream=upstream,
            )
            entry.instance = entry.cls(context)

    def get(self, name: str) -> Provider:
        """The enabled provider with exactly this name; anything else is a 404."""
        entry = self.entries.get(name)
        if entry is None or entry.instance is None:
            raise UnknownProvider()
        return entry.instance

    def entry(self, name: str) -> ProviderEntry:
        entry = self.entries.get(name)
        if entry is None:
            raise UnknownProvider()
        return entry

    def enabled(self) -> list[ProviderEntry]:
        return [e for e in self.entries.values() if e.instance is not None]
