"""Keys derived from the master secret, sealing of values at rest, keyed hashes.

One master secret (`STATE_TOKEN_SECRET`) yields an independent key per purpose
through HKDF-SHA256 with a distinct label, so no key serves two purposes and no
constant salt stands in for a secret. Former secrets (`STATE_TOKEN_SECRET_PREVIOUS`)
still open and still find what they sealed or hashed; new data uses the current one.

A sealed value carries its row key inside the ciphertext: moving a sealed cell
to another row makes it fail to open instead of swapping identities (T6).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import SealError

_SALT = b"linkd-hkdf-v1"
SEAL = "seal"
SESSION_ID = "session-id"
STATE = "state"
USER_INDEX = "user-index"
PURPOSES = (SEAL, SESSION_ID, STATE, USER_INDEX)


def derive_key(secret: str, purpose: str) -> bytes:
    """32 bytes for one purpose; the label makes keys of different purposes independent."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=f"linkd/{purpose}/v1".encode())
    return hkdf.derive(secret.encode("utf-8"))


def random_token(nbytes: int = 32) -> str:
    """A URL-safe random value of `nbytes` bytes of entropy (256 bits by default)."""
    return secrets.token_urlsafe(nbytes)


def pkce_pair() -> tuple[str, str]:
    """A PKCE S256 (verifier, challenge) pair (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class Keyring:
    """The per-purpose keys of the current secret and of each former one."""

    def __init__(self, secret: str, previous: Sequence[str] = ()) -> None:
        secrets_in_order = [secret, *[p for p in previous if p and p != secret]]
        self._hash_keys = {p: [derive_key(s, p) for s in secrets_in_order] for p in PURPOSES if p != SEAL}
        fernets = [Fernet(base64.urlsafe_b64encode(derive_key(s, SEAL))) for s in secrets_in_order]
        self._current = fernets[0]
        self._all = MultiFernet(fernets)

    # keyed hashes -----------------------------------------------------------------
    def digest(self, purpose: str, value: str) -> str:
        """The keyed hash of `value` under the current secret: what new rows are keyed by."""
        return _hmac_hex(self._hash_keys[purpose][0], value)

    def digests(self, purpose: str, value: str) -> list[str]:
        """The keyed hashes under every known secret, current first: what lookups try."""
        return [_hmac_hex(key, value) for key in self._hash_keys[purpose]]

    # sealing ----------------------------------------------------------------------
    def seal(self, row_key: str, value: Any) -> str:
        """Encrypt and authenticate a JSON-able value, bound to `row_key`."""
        payload = json.dumps({"r": row_key, "v": value}, separators=(",", ":")).encode()
        return self._current.encrypt(payload).decode("ascii")

    def open(self, row_key: str, sealed: str) -> Any:
        """Decrypt a value sealed for `row_key`; any mismatch raises SealError."""
        try:
            payload = json.loads(self._all.decrypt(sealed.encode("ascii")))
        except (InvalidToken, ValueError, TypeError, UnicodeError) as exc:
            raise SealError() from exc
        if not isinstance(payload, dict) or not hmac.compare_digest(str(payload.get("r")), row_key):
            raise SealError()
        return payload.get("v")

    def reseal(self, row_key: str, sealed: str) -> str | None:
        """The value sealed under the current secret, or None when it already is."""
        value = self.open(row_key, sealed)
        try:
            self._current.decrypt(sealed.encode("ascii"))
            return None
        except InvalidToken:
            return self.seal(row_key, value)


def _hmac_hex(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def constant_time_equals(a: str | bytes, b: str | bytes) -> bool:
    """Compare secrets without leaking where they differ."""
    if isinstance(a, str):
        a = a.encode("utf-8")
    if isinstance(b, str):
        b = b.encode("utf-8")
    return hmac.compare_digest(a, b)
