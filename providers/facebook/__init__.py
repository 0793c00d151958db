"""Facebook provider plugin: links the Facebook Pages a person manages.

Registered through the `linkd` entry-point group (`facebook = providers.facebook`),
the same route in as any third-party plugin.
"""

from __future__ import annotations

from collections.abc import Callable

from linkd import hookimpl
from linkd.provider import Provider

from .provider import FacebookProvider

__all__ = ["FacebookProvider", "register_providers"]


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(FacebookProvider)
