"""The settings the Shopify provider reads, with their defaults and checks (SPEC.md "Settings")."""

from __future__ import annotations

import re
import urllib.parse

from linkd import Setting
from linkd.upstream import base_url_problem

from .shop import scopes_problem

DEFAULT_SCOPES = "read_product_listings,read_inventory,read_discounts,read_locations,read_products"
# The newest stable Admin API version on 2026-11-27 (2026-10 became stable on 2026-10-01;
# it is supported until 2027-10). Update quarterly: https://shopify.dev/docs/api/usage/versioning
DEFAULT_API_VERSION = "2026-10"
DEFAULT_TIMESTAMP_WINDOW = 90

API_VERSION_PATTERN = re.compile(r"20[0-9]{2}-(01|04|07|10)|unstable")
_PLACEHOLDERS = frozenset(
    {"changeme", "change-me", "secret", "apikey", "api_key", "api-key", "xxx", "todo", "none"}
)
_PLACEHOLDER_MARKERS = (
    "your-",
    "your_",
    "yourapp",
    "replace_with",
    "replace-with",
    "replace_me",
    "changeme",
    "<",
)
_PRINTABLE = re.compile(r"[\x21-\x7e]+")


def placeholder_problem(value: str) -> str | None:
    """Refuse values copied from an example file (`your-api-key`, `replace_with_…`, `changeme`)."""
    lowered = value.strip().lower()
    if lowered in _PLACEHOLDERS or any(marker in lowered for marker in _PLACEHOLDER_MARKERS):
        return "is a placeholder from an example file; set the value from your app's settings in Shopify"
    if not _PRINTABLE.fullmatch(value):
        return "must be printable ASCII without spaces"
    return None


def base_url_template_problem(value: str) -> str | None:
    if "{shop}" not in value:
        return "must contain {shop}, e.g. https://{shop}"
    parts = urllib.parse.urlsplit(value.replace("{shop}", "shop.example"))
    if parts.query or parts.fragment or parts.username or parts.password:
        return "must be a plain base URL (no query, fragment or credentials)"
    return base_url_problem(value)


def api_version_problem(value: str) -> str | None:
    if API_VERSION_PATTERN.fullmatch(value):
        return None
    return "must be an Admin API version such as 2026-10 (YYYY-01, -04, -07 or -10) or unstable"


def window_problem(value: str) -> str | None:
    if value.isdigit() and 1 <= int(value) <= 3600:
        return None
    return "must be a number of seconds between 1 and 3600"


def redirect_uri_problem(value: str) -> str | None:
    parts = urllib.parse.urlsplit(value)
    if parts.fragment or not parts.path:
        return "must be the full callback URL, e.g. https://linkd.example.com/shopify/callback"
    return base_url_problem(value)


SETTINGS = (
    Setting("SHOPIFY_API_KEY", help="The app's client ID.", validate=placeholder_problem),
    Setting("SHOPIFY_API_SECRET", secret=True, help="The app's client secret.", validate=placeholder_problem),
    Setting(
        "SHOPIFY_API_SECRET_PREVIOUS",
        default="",
        secret=True,
        help="The client secret before a rotation; signatures made with it still verify.",
        validate=placeholder_problem,
    ),
    Setting(
        "SHOPIFY_REDIRECT_URI",
        default="",
        help="Callback URL registered with the app (default: {LINKD_PUBLIC_URL}/shopify/callback).",
        validate=redirect_uri_problem,
    ),
    Setting(
        "SHOPIFY_SCOPES", default=DEFAULT_SCOPES, help="Access scopes to request.", validate=scopes_problem
    ),
    Setting(
        "SHOPIFY_API_VERSION",
        default=DEFAULT_API_VERSION,
        help="Admin API version for GraphQL calls.",
        validate=api_version_problem,
    ),
    Setting(
        "SHOPIFY_BASE_URL",
        default="https://{shop}",
        help="Where shops are served; {shop} becomes name.myshopify.com.",
        validate=base_url_template_problem,
    ),
    Setting(
        "SHOPIFY_TIMESTAMP_WINDOW",
        default=str(DEFAULT_TIMESTAMP_WINDOW),
        help="Seconds a signed Shopify redirect stays acceptable.",
        validate=window_problem,
    ),
)
