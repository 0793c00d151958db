"""Shop domains and access scopes: the two things Shopify lets a request name.

A shop is only ever used after `normalise_shop` turned it into `name.myshopify.com`
(SECURITY.md H1): anything else is refused before a URL is built from it, so no
request can be steered to another host. Scopes follow Shopify's rule that a
`write_x` grant implies `read_x`.
"""

from __future__ import annotations

import re
import urllib.parse

from linkd import BadRequest

SHOP_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]*\.myshopify\.com")
SHOP_SUFFIX = ".myshopify.com"
MAX_SHOP_LENGTH = 255
MAX_NAME_LENGTH = 63  # one DNS label
_SHOP_CHARS = re.compile(r"[A-Za-z0-9.-]+")
SCOPE_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
_IMPLIES_READ = re.compile(r"(unauthenticated_)?write_(.+)")

SHOP_HELP = "Enter your store as its name (acme) or its address (acme.myshopify.com), nothing else."


def normalise_shop(value: str | None) -> str:
    """`acme` or `ACME.myshopify.com` → `acme.myshopify.com`; anything else is a 400.

    The raw value never goes into the message: it may carry markup or control characters.
    """
    if not value:
        raise BadRequest("Which store? " + SHOP_HELP)
    # ASCII letters, digits, dots and hyphens only: this refuses paths, userinfo (@), ports,
    # IPv6 literals, whitespace, CR/LF/NUL, percent-encoding and every non-ASCII letter.
    if len(value) > MAX_SHOP_LENGTH or not value.isascii() or not _SHOP_CHARS.fullmatch(value):
        raise BadRequest("That store address is not valid. " + SHOP_HELP)
    shop = value.lower()
    if "." not in shop:
        shop += SHOP_SUFFIX
    if not SHOP_PATTERN.fullmatch(shop) or len(shop) - len(SHOP_SUFFIX) > MAX_NAME_LENGTH:
        raise BadRequest("That store address is not valid. " + SHOP_HELP)
    return shop


def is_valid_shop(value: str | None) -> bool:
    try:
        return normalise_shop(value) == value
    except BadRequest:
        return False


def shop_base_url(template: str, shop: str) -> str:
    """The shop's base URL from `SHOPIFY_BASE_URL` (`https://{shop}` in production)."""
    return template.rstrip("/").replace("{shop}", normalise_shop(shop))


def url_host(url: str) -> str:
    """The `host[:port]` part of a URL, as `Upstream`'s `allowed_hosts` compares it."""
    return urllib.parse.urlsplit(url).netloc


# scopes ---------------------------------------------------------------------------------
def parse_scopes(value: str | None) -> tuple[str, ...]:
    """`"read_a, write_b"` → `("read_a", "write_b")`, order kept, duplicates and blanks dropped."""
    seen: dict[str, None] = {}
    for part in (value or "").split(","):
        scope = part.strip()
        if scope:
            seen.setdefault(scope, None)
    return tuple(seen)


def scopes_problem(value: str) -> str | None:
    scopes = parse_scopes(value)
    if not scopes:
        return "must name at least one scope"
    if not all(SCOPE_PATTERN.fullmatch(s) for s in scopes):
        return "must be comma-separated scope names such as read_products"
    return None


def expand_scopes(scopes: tuple[str, ...] | list[str]) -> set[str]:
    """The scopes a grant covers: Shopify's `write_x` implies `read_x` (and the unauthenticated variant)."""
    expanded = set(scopes)
    for scope in scopes:
        match = _IMPLIES_READ.fullmatch(scope)
        if match:
            expanded.add(f"{match.group(1) or ''}read_{match.group(2)}")
    return expanded


def missing_scopes(requested: tuple[str, ...], granted: tuple[str, ...]) -> list[str]:
    """The requested scopes the grant does not cover (H5), in the order they were requested."""
    covered = expand_scopes(granted)
    return [scope for scope in requested if scope not in covered]
