"""The fake Facebook's world: its user and Pages, what it issued, what it saw, its controls.

Tests and benchmarks read and set `FacebookSandboxState` directly: counters per
endpoint, every request seen, every code and token minted (to search for leaks),
auto-approve, appsecret_proof required or not, forced failures, latency, hostile
paging. The module also builds Meta-style `signed_request` values (good and
tampered) for the deauthorize and data-deletion callbacks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import urllib.parse
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

SANDBOX_APP_ID = "123456789012345"
FAILURE_MODES = ("500", "garbage", "html", "empty", "redirect", "190", "slow")


@dataclass
class SandboxPage:
    id: str
    name: str
    category: str


@dataclass
class SandboxUser:
    id: str = "100087654321001"
    name: str = "Sandy Sandbox"
    pages: list[SandboxPage] = field(
        default_factory=lambda: [
            SandboxPage("102927594431953", "Sandbox Coffee Roasters", "Coffee Shop"),
            SandboxPage("102927594431954", "Sandbox Bookshop", "Book Store"),
        ]
    )


@dataclass
class Grant:
    """A code or token the fake issued."""

    kind: str  # code | short | long | page
    user_id: str
    expires_at: float | None
    scopes: tuple[str, ...] = ()
    page_id: str | None = None
    redirect_uri: str = ""
    challenge: str | None = None
    used: bool = False
    revoked: bool = False


@dataclass
class RecordedRequest:
    endpoint: str
    method: str
    uri: str
    headers: dict[str, str]
    body: bytes


class FacebookSandboxState:
    """The fake's world and its controls; tests read and set these attributes directly."""

    def __init__(self, base_url: str, app_id: str, app_secret: str, version: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.app_id = app_id
        self.app_secret = app_secret
        self.version = version
        self.user = SandboxUser()
        self.allowed_redirect_uris: set[str] | None = None  # None: any http(s) URI
        self.auto_approve = False  # or `sandbox_auto=1` on the dialog URL
        self.require_proof = True
        self.page_size = 1  # Pages per result page: two Pages come over two result pages
        self.latency = 0.0  # seconds every answer waits (benchmarks)
        self.slow_seconds = 5.0  # how long the "slow" failure waits
        self.code_ttl = 600.0
        self.paging_next_base: str | None = None  # hostile paging: `next` links on this base
        self.counts: Counter[str] = Counter()
        self.requests: deque[RecordedRequest] = deque(maxlen=20_000)  # the latest, for inspection
        self.minted: list[str] = []
        self.grants: dict[str, Grant] = {}
        self.pending: dict[str, dict[str, Any]] = {}
        self.revoked_users: list[str] = []
        self._failures: dict[str, list[str]] = {}

    # controls ---------------------------------------------------------------------
    def fail(self, endpoint: str, mode: str, times: int = 1) -> None:
        """Make the next `times` calls of `endpoint` (dialog, token, me, accounts, permissions) fail."""
        if mode not in FAILURE_MODES:
            raise ValueError(f"unknown failure mode {mode!r}")
        self._failures.setdefault(endpoint, []).extend([mode] * times)

    def take_failure(self, endpoint: str) -> str | None:
        queue = self._failures.get(endpoint)
        return queue.pop(0) if queue else None

    def expire_tokens(self) -> None:
        """Every user and Page token expires now (Graph then answers 190)."""
        for grant in self.grants.values():
            if grant.kind != "code":
                grant.expires_at = time.time() - 1

    def token_requests(self) -> list[dict[str, str]]:
        """The parameters of every call to the token endpoint, oldest first."""
        return [
            dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(r.uri).query + "&" + r.body.decode("latin-1")))
            for r in self.requests
            if r.endpoint == "token"
        ]

    def code_exchanges(self) -> int:
        """How many authorization codes were presented (refreshes not included)."""
        return sum(1 for params in self.token_requests() if "code" in params)

    def verifiers(self) -> list[str]:
        """The PKCE verifiers received at the token endpoint, oldest first."""
        return [p["code_verifier"] for p in self.token_requests() if p.get("code_verifier")]

    def secrets(self) -> list[str]:
        """Everything that must never leak: the app secret, every code and token minted."""
        return [self.app_secret, *self.minted]

    def mint(self, prefix: str, grant: Grant) -> str:
        value = f"{prefix}{secrets.token_urlsafe(32)}"
        self.minted.append(value)
        self.grants[value] = grant
        return value

    def record(self, endpoint: str, request: Any) -> None:
        self.counts[endpoint] += 1
        headers = {k: v for k, v in request.headers.get_all()}
        self.requests.append(
            RecordedRequest(endpoint, request.method, request.uri, headers, request.body or b"")
        )

    # signed_request helpers (Meta's deauthorize and data-deletion callbacks) ---------
    def signed_request(
        self,
        user_id: str | int | None = None,
        *,
        secret: str | None = None,
        algorithm: str = "HMAC-SHA256",
        issued_at: int | None = None,
        **extra: Any,
    ) -> str:
        payload = {
            "algorithm": algorithm,
            "issued_at": int(time.time()) if issued_at is None else issued_at,
            "user_id": user_id or self.user.id,
            **extra,
        }
        return encode_signed_request(payload, self.app_secret if secret is None else secret)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign(encoded_payload: str, secret: str) -> str:
    return b64(hmac.new(secret.encode(), encoded_payload.encode(), hashlib.sha256).digest())


def encode_signed_request(payload: Any, secret: str) -> str:
    """`<sig>.<payload>` as Meta builds it (base64url without padding)."""
    encoded = b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{sign(encoded, secret)}.{encoded}"


def tamper_signature(value: str) -> str:
    """The same request with one character of the signature changed (still valid base64url)."""
    first = value[0]
    return ("B" if first == "A" else "A") + value[1:]


def tamper_payload(value: str, **changes: Any) -> str:
    """The payload altered (another user id by default) under the original signature."""
    sig, _, encoded = value.partition(".")
    payload = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    payload.update(changes or {"user_id": "100000000000666"})
    return f"{sig}.{b64(json.dumps(payload, separators=(',', ':')).encode())}"


def with_query(uri: str, params: dict[str, str]) -> str:
    return f"{uri}{'&' if '?' in uri else '?'}{urllib.parse.urlencode(params)}"


def s256(verifier: str) -> str:
    return b64(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
