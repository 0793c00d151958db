"""The fake Shopify's memory: apps, codes, tokens, counters, and the knobs tests turn.

Used by `providers/shopify_sandbox.py` (the HTTP side). It signs redirects and webhooks
the way Shopify documents it, with its own code: it shares nothing with the provider, so a
signing mistake on either side shows up as a failed test rather than agreeing with itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SHOP = re.compile(r"[a-z0-9][a-z0-9-]*\.myshopify\.com")
SCOPE = re.compile(r"[a-z][a-z0-9_]*")
VERSION = re.compile(r"20[0-9]{2}-[0-9]{2}|unstable")
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
INVALID_TOKEN = "[API] Invalid API key or access token (unrecognized login or wrong password)"
FAILURE_MODES = ("500", "garbage", "invalid_grant", "hang", "redirect")


@dataclass
class CodeGrant:
    shop: str
    scope: str
    expires_at: float
    used: bool = False
    tokens: list[str] = field(default_factory=list)


@dataclass
class IssuedToken:
    kind: str  # "access" or "refresh"
    shop: str
    scope: str
    expires_at: float | None
    alive: bool = True


class ShopifySandboxState:
    """The fake's memory and the knobs tests turn. All times are epoch seconds."""

    def __init__(
        self,
        api_key: str | None = None,
        api_secret: str | None = None,
        *,
        redirect_uri: str | None = None,
        auto_approve: bool = False,
        latency: float = 0.0,
        app_name: str = "linkd",
    ) -> None:
        self.api_key = api_key or secrets.token_hex(16)
        self.api_secret = api_secret or "shpss_" + secrets.token_hex(16)
        self.redirect_uri = redirect_uri  # None: any loopback http(s) URL is accepted
        self.auto_approve = auto_approve
        self.latency = latency  # seconds every request waits (benchmarks)
        self.app_name = app_name
        self.grant_scopes: str | None = None  # answer this scope instead of the requested one (H5 tests)
        self.code_ttl = 60.0
        self.access_ttl = 3599
        self.refresh_ttl = 90 * 24 * 3600
        self.hang_seconds = 3.0
        self.counters: Counter[str] = Counter()
        self.api_versions: Counter[str] = Counter()
        self.codes: dict[str, CodeGrant] = {}
        self.tokens: dict[str, IssuedToken] = {}
        self.shop_overrides: dict[str, dict[str, Any]] = {}
        self.uninstalled: list[str] = []  # shops the app was uninstalled from, in order
        self.failures: dict[str, deque[str]] = {"access_token": deque(), "graphql": deque()}

    # test controls ---------------------------------------------------------------------
    def fail_next(self, endpoint: str, mode: str, times: int = 1) -> None:
        """Make the next answer(s) of `access_token` or `graphql` fail: one of FAILURE_MODES."""
        if mode not in FAILURE_MODES or endpoint not in self.failures:
            raise ValueError(f"unknown endpoint or failure mode: {endpoint} {mode}")
        self.failures[endpoint].extend([mode] * times)

    def requests(self, endpoint: str | None = None) -> int:
        """Requests that reached `endpoint` (authorize, access_token, graphql, api_permissions), or all."""
        return self.counters[endpoint] if endpoint else sum(self.counters.values())

    def issued_secrets(self, include_client_secret: bool = True) -> list[str]:
        """Every code and token this fake handed out (and the client secret): what must never leak."""
        values = [*self.codes, *self.tokens]
        return [self.api_secret, *values] if include_client_secret else values

    # the names linkd's generic attack tests use for every provider's fake
    @property
    def minted(self) -> list[str]:
        return self.issued_secrets()

    @property
    def counts(self) -> Counter[str]:
        return self.counters

    def live_tokens(self, shop: str, kind: str = "access") -> list[str]:
        now = time.time()
        return [t for t, i in self.tokens.items() if i.kind == kind and i.shop == shop and _alive(i, now)]

    # signing, as Shopify does it --------------------------------------------------------
    def sign(self, pairs: Sequence[tuple[str, str]] | Mapping[str, str], secret: str | None = None) -> str:
        """Hex HMAC-SHA256 over the sorted, escaped `key=value` pairs (every pair but `hmac`)."""
        items = list(pairs.items()) if isinstance(pairs, Mapping) else list(pairs)
        parts = []
        for key, value in items:
            if key == "hmac":
                continue
            key = key.replace("%", "%25").replace("&", "%26").replace("=", "%3D")
            value = value.replace("%", "%25").replace("&", "%26")
            parts.append(f"{key}={value}")
        message = "&".join(sorted(parts)).encode("utf-8")
        return hmac.new((secret or self.api_secret).encode(), message, hashlib.sha256).hexdigest()

    def signed_params(
        self, params: Mapping[str, str], *, secret: str | None = None, timestamp: int | None = None
    ) -> list[tuple[str, str]]:
        """`params` plus `timestamp` (now unless given) and `hmac`, as Shopify orders them."""
        pairs = dict(params)
        pairs.setdefault("timestamp", str(int(time.time()) if timestamp is None else timestamp))
        signed = sorted(pairs.items())
        return [("hmac", self.sign(signed, secret)), *signed]

    def callback_params(
        self,
        shop: str,
        state: str,
        code: str | None = None,
        *,
        scope: str = "read_products",
        secret: str | None = None,
        timestamp: int | None = None,
    ) -> list[tuple[str, str]]:
        """A callback query as Shopify sends it; a fresh code for `scope` unless one is given."""
        code = code or self.issue_code(shop, self.grant_scopes or scope)
        params = {"code": code, "host": host_param(shop), "shop": shop, "state": state}
        return self.signed_params(params, secret=secret, timestamp=timestamp)

    def webhook_payload(self, topic: str, shop: str) -> dict[str, Any]:
        """A body shaped like Shopify's for `topic` (the Shop resource for app/uninstalled)."""
        shop_id = shop_number(shop)
        if topic == "app/uninstalled":
            return {"id": shop_id, "name": shop_name(shop), "domain": shop, "myshopify_domain": shop}
        if topic == "shop/redact":
            return {"shop_id": shop_id, "shop_domain": shop}
        customer = {"id": 191167, "email": "john@example.com", "phone": "555-625-1199"}
        if topic == "customers/redact":
            return {
                "shop_id": shop_id,
                "shop_domain": shop,
                "customer": customer,
                "orders_to_redact": [299938],
            }
        if topic == "customers/data_request":
            return {
                "shop_id": shop_id,
                "shop_domain": shop,
                "orders_requested": [299938],
                "customer": customer,
                "data_request": {"id": 9999},
            }
        return {"shop_domain": shop}

    def signed_webhook(
        self,
        topic: str,
        shop: str,
        body: bytes | dict[str, Any] | None = None,
        *,
        secret: str | None = None,
        event_id: str | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """(headers, body) of a delivery signed like Shopify's; the body defaults to the topic's shape."""
        if body is None:
            body = self.webhook_payload(topic, shop)
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        digest = hmac.new((secret or self.api_secret).encode(), raw, hashlib.sha256).digest()
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Topic": topic,
            "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
            "X-Shopify-Shop-Domain": shop,
            "X-Shopify-API-Version": "2026-10",
            "X-Shopify-Webhook-Id": str(uuid.uuid4()),
            "X-Shopify-Event-Id": event_id or str(uuid.uuid4()),
            "X-Shopify-Triggered-At": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return headers, raw

    # the platform's memory --------------------------------------------------------------
    def issue_code(self, shop: str, scope: str) -> str:
        now = time.time()
        if len(self.codes) > 10_000:  # keep long benchmark runs flat
            self.codes = {c: g for c, g in self.codes.items() if not g.used and g.expires_at > now}
        code = secrets.token_hex(16)
        self.codes[code] = CodeGrant(shop, scope, now + self.code_ttl)
        return code

    def issue_tokens(self, shop: str, scope: str, expiring: bool) -> dict[str, Any]:
        access = "shpat_" + secrets.token_hex(16)
        now = time.time()
        self.tokens[access] = IssuedToken("access", shop, scope, now + self.access_ttl if expiring else None)
        answer: dict[str, Any] = {"access_token": access, "scope": scope}
        if expiring:
            refresh = "shprt_" + secrets.token_hex(24)
            self.tokens[refresh] = IssuedToken("refresh", shop, scope, now + self.refresh_ttl)
            answer.update(
                expires_in=self.access_ttl, refresh_token=refresh, refresh_token_expires_in=self.refresh_ttl
            )
        return answer

    def token(self, value: str | None, shop: str, kind: str) -> IssuedToken | None:
        info = self.tokens.get(value or "")
        if info is None or info.kind != kind or info.shop != shop or not _alive(info, time.time()):
            return None
        return info

    def uninstall(self, shop: str) -> None:
        self.uninstalled.append(shop)
        for info in self.tokens.values():
            if info.shop == shop:
                info.alive = False

    def shop_data(self, shop: str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": f"gid://shopify/Shop/{shop_number(shop)}",
            "name": shop_name(shop),
            "myshopifyDomain": shop,
            "email": f"owner@{shop.split('.')[0]}.example",
            "plan": {
                "publicDisplayName": "Development",
                "displayName": "Developer Preview",
                "shopifyPlus": False,
            },
        }
        data.update(self.shop_overrides.get(shop, {}))
        return data


def _alive(info: IssuedToken, now: float) -> bool:
    return info.alive and (info.expires_at is None or info.expires_at > now)


def shop_number(shop: str) -> int:
    return int.from_bytes(hashlib.sha256(shop.encode()).digest()[:4], "big")


def shop_name(shop: str) -> str:
    return shop.split(".")[0].replace("-", " ").title()


def host_param(shop: str) -> str:
    raw = f"admin.shopify.com/store/{shop.split('.')[0]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
