"""Keys per purpose, sealing bound to rows, rotation (SECURITY.md T3, T5, T6)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from linkd.crypto import PURPOSES, SEAL, SESSION_ID, STATE, USER_INDEX, Keyring, derive_key, pkce_pair
from linkd.errors import SealError

SECRET = "k3Jr9vXq2LmP8sTzW4nB6yHc1dFgA5eR7uIoQ0wE"
OTHER = "Zx8Cv7Bn6Mq5Wr4Et3Yu2Ip1Oa9Sd8Fg7Hj6Kl5Pz"


def test_each_purpose_gets_its_own_key_and_none_is_the_secret() -> None:
    keys = {derive_key(SECRET, p) for p in PURPOSES}
    assert len(keys) == len(PURPOSES)
    assert SECRET.encode() not in keys
    assert derive_key(SECRET, SEAL) != derive_key(OTHER, SEAL)


def test_keyed_hashes_differ_per_purpose_and_are_not_plain_sha256() -> None:
    ring = Keyring(SECRET)
    digests = {ring.digest(p, "value") for p in (SESSION_ID, STATE, USER_INDEX)}
    assert len(digests) == 3
    assert hashlib.sha256(b"value").hexdigest() not in digests


def test_sealed_value_opens_only_for_its_row() -> None:
    ring = Keyring(SECRET)
    a = ring.seal("connection:x:1", {"access_token": "tok-a"})
    b = ring.seal("connection:x:2", {"access_token": "tok-b"})
    assert ring.open("connection:x:1", a) == {"access_token": "tok-a"}
    with pytest.raises(SealError):
        ring.open("connection:x:2", a)  # swapped cells fail instead of exchanging identities
    with pytest.raises(SealError):
        ring.open("connection:x:1", b)
    assert "tok-a" not in a


def test_tampered_or_garbage_ciphertext_fails_cleanly() -> None:
    ring = Keyring(SECRET)
    sealed = ring.seal("r", "v")
    flipped = sealed[:-5] + ("A" if sealed[-5] != "A" else "B") + sealed[-4:]
    for bad in (flipped, "", "not-a-token", "€uro"):
        with pytest.raises(SealError):
            ring.open("r", bad)


def test_rotation_old_data_opens_new_data_uses_only_new_key() -> None:
    old = Keyring(OTHER)
    sealed_old = old.seal("r", "payload")
    rotated = Keyring(SECRET, previous=[OTHER])
    assert rotated.open("r", sealed_old) == "payload"
    sealed_new = rotated.seal("r", "payload")
    assert Keyring(SECRET).open("r", sealed_new) == "payload"
    with pytest.raises(SealError):
        old.open("r", sealed_new)
    resealed = rotated.reseal("r", sealed_old)
    assert resealed is not None and Keyring(SECRET).open("r", resealed) == "payload"
    assert rotated.reseal("r", sealed_new) is None
    # hashes: lookups try current first, then former keys
    assert rotated.digests(SESSION_ID, "c") == [
        Keyring(SECRET).digest(SESSION_ID, "c"),
        old.digest(SESSION_ID, "c"),
    ]


def test_unknown_key_fails_cleanly() -> None:
    with pytest.raises(SealError):
        Keyring(SECRET).open("r", Keyring(OTHER).seal("r", "v"))


def test_pkce_is_s256_of_the_verifier() -> None:
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert challenge == expected and verifier != challenge
