"""Shopify's two signatures: the `hmac` on redirects and `X-Shopify-Hmac-Sha256` on webhooks.

Redirects (install request, OAuth callback) carry `hmac`: hex HMAC-SHA256, keyed with
the app's client secret, over every other query parameter sorted by name and joined
as `key=value` with `&`. Shopify escapes the delimiters so no value can fake a
pair: `%` → `%25` and `&` → `%26` everywhere, and `=` → `%3D` in names.

Webhooks carry the base64 HMAC-SHA256 of the raw body in `X-Shopify-Hmac-Sha256`.

Both are checked against the current secret and the previous one (H4: during a
rotation Shopify keeps signing with the old secret for a while), in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence

from linkd import InvalidSignature

HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
TIMESTAMP = re.compile(r"[0-9]{1,12}")


def _escape_name(name: str) -> str:
    return name.replace("%", "%25").replace("&", "%26").replace("=", "%3D")


def _escape_value(value: str) -> str:
    return value.replace("%", "%25").replace("&", "%26")


def signed_message(pairs: Iterable[tuple[str, str]]) -> bytes:
    """The bytes Shopify signs: every pair but `hmac`, sorted by name, escaped, joined by `&`."""
    kept = sorted((k, v) for k, v in pairs if k != "hmac")
    return "&".join(f"{_escape_name(k)}={_escape_value(v)}" for k, v in kept).encode("utf-8")


def query_digest(secret: str, pairs: Iterable[tuple[str, str]]) -> str:
    return hmac.new(secret.encode("utf-8"), signed_message(pairs), hashlib.sha256).hexdigest()


def body_digest(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()).decode("ascii")


def _matches_any(given: bytes, expected: list[bytes]) -> bool:
    # Compare against every secret, never stopping early, so timing says nothing about which.
    matched = False
    for candidate in expected:
        matched |= hmac.compare_digest(given, candidate)
    return matched


def verify_query(
    pairs: Sequence[tuple[str, str]], secrets: Sequence[str], window: int, now: float | None = None
) -> None:
    """Check a redirect's `hmac` (H2) and `timestamp` (H3); raise InvalidSignature otherwise.

    Every parameter counts, including ones linkd does not use: an added, removed,
    changed or repeated parameter fails, the order of parameters does not matter.
    """
    counts = Counter(key for key, _ in pairs)
    if counts["hmac"] == 0:
        raise InvalidSignature("This request was not signed by Shopify.")
    if any(n > 1 for n in counts.values()):
        raise InvalidSignature("A parameter is repeated; Shopify never sends one twice.")
    given = next(v for k, v in pairs if k == "hmac")
    if not HEX_DIGEST.fullmatch(given):
        raise InvalidSignature()
    if not _matches_any(
        given.encode("ascii"), [query_digest(s, pairs).encode("ascii") for s in secrets if s]
    ):
        raise InvalidSignature()
    stamp = next((v for k, v in pairs if k == "timestamp"), "")
    if not TIMESTAMP.fullmatch(stamp):
        raise InvalidSignature("This request carries no valid timestamp.")
    if abs((time.time() if now is None else now) - int(stamp)) > window:
        raise InvalidSignature("This request is too old (or its clock is off). Please start again.")


def verify_body(header: str | None, body: bytes, secrets: Sequence[str]) -> bool:
    """True when `header` is the base64 HMAC of `body` under one of `secrets`."""
    if not header or not header.isascii() or len(header) > 128:
        return False
    return _matches_any(header.encode("ascii"), [body_digest(s, body).encode("ascii") for s in secrets if s])
