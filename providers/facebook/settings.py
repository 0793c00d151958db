"""The settings the Facebook provider reads, with their validators.

Names are the ones users already have in their `.env` (SPEC.md). Validation
refuses what would fail later at Meta or leak: app ids that are not numeric,
placeholder secrets copied from an example file, plain-http base URLs off
loopback, malformed Graph versions.
"""

from __future__ import annotations

import re
import urllib.parse

from linkd.provider import Setting
from linkd.upstream import base_url_problem

# The newest Graph API version in Meta's changelog (introduced 2026-07-29);
# v19.0 and v20.0 are past their end of life.
GRAPH_VERSION = "v26.0"
DEFAULT_SCOPES = "pages_messaging,pages_show_list,pages_manage_metadata"
DIALOG_BASE_URL = "https://www.facebook.com"
GRAPH_BASE_URL = "https://graph.facebook.com"

_PLACEHOLDERS = frozenset(
    {
        "changeme",
        "change-me",
        "change_me",
        "changeme-in-prod",
        "your-app-secret",
        "your_app_secret",
        "app-secret",
        "app_secret",
        "secret",
        "todo",
        "xxx",
        "none",
        "null",
    }
)
_PLACEHOLDER_PREFIXES = (
    "replace_with",
    "replace-with",
    "replace_me",
    "replace-me",
    "your-",
    "your_",
    "<",
    "${",
)


def is_placeholder(value: str) -> bool:
    """True for values that come from an example file rather than from Meta's app dashboard."""
    lowered = value.strip().lower()
    if lowered in _PLACEHOLDERS or lowered.startswith(_PLACEHOLDER_PREFIXES):
        return True
    return "placeholder" in lowered or len(set(lowered)) <= 1


def _app_id(value: str) -> str | None:
    if re.fullmatch(r"[0-9]{15,20}", value):
        return None
    return "must be the numeric app id from the Meta app dashboard (15 to 20 digits)"


def _secret(value: str) -> str | None:
    if is_placeholder(value):
        return "is a placeholder; set the app secret from the Meta app dashboard"
    if not re.fullmatch(r"[\x21-\x7e]+", value):
        return "must be printable ASCII without spaces"
    return None


def _previous_secrets(value: str) -> str | None:
    for item in value.split(","):
        if item.strip() and _secret(item.strip()):
            return "holds a placeholder or malformed secret"
    return None


def _version(value: str) -> str | None:
    if re.fullmatch(r"v[0-9]{1,3}\.[0-9]{1,2}", value):
        return None
    return f"must look like {GRAPH_VERSION}"


def _scopes(value: str) -> str | None:
    items = [s.strip() for s in value.split(",")]
    if items and all(re.fullmatch(r"[a-z_]{1,64}", s) for s in items):
        return None
    return "must be a comma-separated list of permission names (e.g. pages_show_list)"


def _url(value: str) -> str | None:
    problem = base_url_problem(value)
    if problem:
        return problem
    parsed = urllib.parse.urlsplit(value)
    if parsed.query or parsed.fragment or "@" in parsed.netloc:
        return "must be a plain URL without query, fragment or credentials"
    return None


def scope_list(value: str) -> str:
    """The scopes as the login dialog expects them: comma-separated, no spaces."""
    return ",".join(s.strip() for s in value.split(",") if s.strip())


SETTINGS = (
    Setting("FACEBOOK_APP_ID", help="App ID from the Meta app dashboard (15-20 digits).", validate=_app_id),
    Setting(
        "FACEBOOK_APP_SECRET", secret=True, help="App secret from the Meta app dashboard.", validate=_secret
    ),
    Setting(
        "FACEBOOK_APP_SECRET_PREVIOUS",
        default="",
        secret=True,
        help="Former app secret(s), comma-separated: signed requests made with them still verify.",
        validate=_previous_secrets,
    ),
    Setting(
        "FACEBOOK_REDIRECT_URI",
        default="",
        help="Redirect URI registered with Meta (default: {LINKD_PUBLIC_URL}/facebook/callback).",
        validate=_url,
    ),
    Setting("FACEBOOK_SCOPES", default=DEFAULT_SCOPES, help="Permissions asked for.", validate=_scopes),
    Setting("FACEBOOK_GRAPH_VERSION", default=GRAPH_VERSION, help="Graph API version.", validate=_version),
    Setting("FACEBOOK_DIALOG_BASE_URL", default=DIALOG_BASE_URL, help="Login dialog host.", validate=_url),
    Setting("FACEBOOK_GRAPH_BASE_URL", default=GRAPH_BASE_URL, help="Graph API host.", validate=_url),
)
