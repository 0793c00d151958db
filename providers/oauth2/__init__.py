"""Plain OAuth 2.0 platforms: the generic provider, and platforms declared in TOML files.

One class, two ways in:

- code: subclass `OAuth2Provider` and set a few class attributes (its endpoints, scopes,
  where the account id sits in the user info); everything else is inherited;
- data: drop `NAME.toml` into `LINKD_PROVIDERS_DIR`; `register_providers` below builds the
  same subclass from it. Its keys are the class attributes, spelled in TOML.

A definition file that does not validate never stops linkd: it is registered as a
stand-in that is always disabled and whose problems (`file: key '…' what is wrong`) are
what `linkd providers` and `linkd check` show, while every other provider keeps working.

The pieces:

- `provider.py`     OAuth2Provider: settings derived from the name, the connect flow, refresh, revoke
- `client.py`       OAuth2Client, its base: the class attributes, endpoints, client auth, reading answers
- `checks.py`       checks of the settings (credentials, redirect URI, base URL)
- `pointers.py`     JSON pointers (RFC 6901) into the platform's answers
- `schema.py`       the keys of a definition file and their checks
- `definitions.py`  reading the files, stand-ins for broken ones, registering them

Guide and key reference: docs/plugins.md. The generic fake platform every
`OAuth2Provider` inherits as its sandbox is `providers/oauth2_sandbox.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from linkd import Provider, hookimpl

from .checks import credential_problem, plain_url_problem, redirect_uri_problem, setting_prefix
from .client import CLIENT_AUTH_METHODS, ERROR_CODE, SAFE_HINT, OAuth2Client
from .definitions import (
    MAX_FILE_BYTES,
    BrokenDefinition,
    broken_definition,
    load_definitions,
    provider_from_file,
    read_definition,
    register_all,
)
from .pointers import pointer_tokens, resolve_pointer
from .provider import OAuth2Provider
from .schema import KEYS, REQUIRED, RESERVED_PARAMS, URL_KEYS, Check, definition_problems

log = logging.getLogger("linkd.providers.oauth2")


@hookimpl(tryfirst=True)
def register_providers(register: Callable[[type[Provider]], None], settings: Any) -> None:
    """Register one provider per definition file in `settings.providers_dir`.

    `tryfirst` puts this implementation last in `get_hookimpls()`, the order in which the
    Registry calls them: code plugins register first, so a clash surfaces here, not in them.
    """
    directory = Path(settings.providers_dir)
    if not directory.is_dir() and "LINKD_PROVIDERS_DIR" in getattr(settings, "env", {}):
        log.warning("LINKD_PROVIDERS_DIR %s is not a directory; no provider is declared by file", directory)
    register_all(register, load_definitions(directory))


__all__ = [
    "CLIENT_AUTH_METHODS",
    "ERROR_CODE",
    "KEYS",
    "MAX_FILE_BYTES",
    "REQUIRED",
    "RESERVED_PARAMS",
    "SAFE_HINT",
    "URL_KEYS",
    "BrokenDefinition",
    "Check",
    "OAuth2Client",
    "OAuth2Provider",
    "broken_definition",
    "credential_problem",
    "definition_problems",
    "load_definitions",
    "plain_url_problem",
    "pointer_tokens",
    "provider_from_file",
    "read_definition",
    "redirect_uri_problem",
    "register_all",
    "register_providers",
    "resolve_pointer",
    "setting_prefix",
]
