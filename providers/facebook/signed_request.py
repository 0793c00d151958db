"""Verify and read Meta's `signed_request` (deauthorize and data-deletion callbacks).

Format: `<signature>.<payload>`, both base64url without padding; the signature is
HMAC-SHA256 of the *encoded* payload keyed with the app secret, and the payload
is JSON with `algorithm`, `issued_at` and `user_id`. Meta's reference parser
compares `strtoupper(algorithm)` with "HMAC-SHA256", so the case of the claim is
not significant; any other algorithm (`none` included) is refused.

The signature is checked before the payload is parsed, in constant time, against
every configured secret (current and previous, for rotation).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from typing import Any

from linkd.errors import BadRequest, Unauthorized

MAX_LENGTH = 8192
_B64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


class MalformedSignedRequest(BadRequest):
    code = "malformed_signed_request"
    message = "The signed request is malformed."


class BadSignedRequest(Unauthorized):
    code = "invalid_signature"
    message = "The signed request did not verify."


def b64url_decode(part: str) -> bytes:
    """Strict base64url: only the URL-safe alphabet; trailing '=' padding tolerated."""
    if not _B64URL.fullmatch(part):
        raise MalformedSignedRequest()
    stripped = part.rstrip("=")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError):
        raise MalformedSignedRequest() from None


def parse(
    value: str, secrets: Sequence[str], *, now: float, max_age: float, max_skew: float = 300.0
) -> dict[str, Any]:
    """The verified payload, with `user_id` as a string of digits.

    Raises BadSignedRequest (401) when the signature, algorithm or age is wrong,
    MalformedSignedRequest (400) when the value cannot be read.
    """
    if not value or len(value) > MAX_LENGTH:
        raise MalformedSignedRequest()
    encoded_sig, dot, encoded_payload = value.partition(".")
    if not dot or not encoded_payload:
        raise MalformedSignedRequest()
    if not encoded_sig:  # e.g. an "algorithm": "none" request: unsigned is unauthenticated
        raise BadSignedRequest()
    signature = b64url_decode(encoded_sig)
    payload_bytes = encoded_payload.encode("utf-8")
    verified = False
    for secret in secrets:
        expected = hmac.new(secret.encode("utf-8"), payload_bytes, hashlib.sha256).digest()
        verified |= hmac.compare_digest(expected, signature)
    if not verified:
        raise BadSignedRequest()
    try:
        data = json.loads(b64url_decode(encoded_payload))
    except (ValueError, UnicodeDecodeError):
        raise MalformedSignedRequest() from None
    if not isinstance(data, dict):
        raise MalformedSignedRequest()
    algorithm = data.get("algorithm")
    if not isinstance(algorithm, str) or algorithm.upper() != "HMAC-SHA256":
        raise BadSignedRequest()
    issued_at = data.get("issued_at")
    if type(issued_at) is not int:  # not bool, not float (json reads NaN and Infinity)
        raise MalformedSignedRequest()
    if issued_at > now + max_skew:
        raise MalformedSignedRequest("The signed request was issued in the future.")
    if now - issued_at > max_age:
        raise BadSignedRequest("The signed request has expired.")
    user_id = data.get("user_id")
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if not isinstance(user_id, str) or not re.fullmatch(r"[0-9]{1,32}", user_id):
        raise MalformedSignedRequest()
    data["user_id"] = user_id
    return data
