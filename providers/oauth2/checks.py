"""Checks of the settings an `OAuth2Provider` reads: credentials, redirect URI, base URL."""

from __future__ import annotations

import re
import urllib.parse

from linkd.config import is_placeholder
from linkd.upstream import base_url_problem

_PRINTABLE = re.compile(r"[\x21-\x7e]+")


def credential_problem(value: str) -> str | None:
    if is_placeholder(value):
        return "is a placeholder from an example file; set the value from the platform's app settings"
    if not _PRINTABLE.fullmatch(value):
        return "must be printable ASCII without spaces"
    return None


def plain_url_problem(value: str, hint: str | None = None) -> str | None:
    """https (or http on loopback), no credentials, no fragment; the hint placeholder is allowed."""
    sample = value.replace("{" + hint + "}", "hint-example") if hint else value
    if "{" in sample or "}" in sample:
        return "uses a placeholder that is not the account hint"
    parts = urllib.parse.urlsplit(sample)
    if parts.username or parts.password or parts.fragment:
        return "must not carry credentials or a fragment"
    return base_url_problem(sample)


def redirect_uri_problem(value: str) -> str | None:
    if urllib.parse.urlsplit(value).query:
        return "must be the callback URL registered with the platform, without a query"
    return plain_url_problem(value)


def setting_prefix(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())
