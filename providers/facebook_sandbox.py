"""A fake Facebook (login dialog and Graph API) for `linkd demo`, the tests and benchmarks.

Strict like the real platform where it matters for security: the client secret is
checked, codes are single-use, expire and are bound byte-for-byte to their
redirect URI (and to their PKCE challenge), tokens can expire or be revoked
(error 190), and `appsecret_proof` is required on Graph calls unless
`state.require_proof` is turned off (the seed app that linkd is benchmarked
against never sends one). Everything is kept in `FacebookSandboxState`: counters
per endpoint, every request seen, every secret minted (so tests can search for
leaks), and controls (auto-approve, forced failures, latency, hostile paging).

This module holds the Graph endpoints and `make_sandbox`; the world and its
controls are in `providers/facebook/sandbox_state.py`, the login dialog in
`sandbox_dialog.py`, the shared handler base in `sandbox_handler.py`. Only
`linkd demo`, tests and benchmarks import any of them.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import time
import urllib.parse
from typing import Any

from linkd.provider import Sandbox

from .facebook.sandbox_dialog import DecideHandler, DialogHandler
from .facebook.sandbox_handler import SandboxHandler
from .facebook.sandbox_state import (
    FAILURE_MODES,
    SANDBOX_APP_ID,
    FacebookSandboxState,
    Grant,
    RecordedRequest,
    SandboxPage,
    SandboxUser,
    b64,
    encode_signed_request,
    s256,
    sign,
    tamper_payload,
    tamper_signature,
)

__all__ = [
    "FAILURE_MODES",
    "SANDBOX_APP_ID",
    "FacebookSandboxState",
    "RecordedRequest",
    "SandboxPage",
    "SandboxUser",
    "encode_signed_request",
    "make_sandbox",
    "sign",
    "tamper_payload",
    "tamper_signature",
]

SHORT_LIVED = 3600
LONG_LIVED = 5183944
V = r"(v[0-9]{1,3}\.[0-9]{1,2})"


class TokenHandler(SandboxHandler):
    """GET (or POST) /{version}/oauth/access_token: code exchange and `fb_exchange_token`."""

    endpoint = "token"

    def get(self, version: str) -> None:
        state = self.state
        if self.arg("client_id") != state.app_id:
            return self.error(400, 101, "Error validating application. Invalid application ID.")
        secret = self.arg("client_secret") or ""
        if not hmac.compare_digest(secret.encode(), state.app_secret.encode()):
            return self.error(400, 1, "Error validating client secret.")
        if self.arg("grant_type") == "fb_exchange_token":
            old = state.grants.get(self.arg("fb_exchange_token") or "")
            if old is None or old.kind not in ("short", "long") or old.revoked:
                return self.error(400, 190, "Invalid OAuth access token - Cannot parse access token")
            if old.expires_at is not None and old.expires_at < time.time():
                return self.error(
                    400, 190, "Error validating access token: Session has expired.", subcode=463
                )
            return self._issue("long", old.user_id, old.scopes, LONG_LIVED)
        code, redirect_uri = self.arg("code"), self.arg("redirect_uri")
        if not code or redirect_uri is None:
            return self.error(400, 100, "Missing redirect_uri or code parameter.")
        grant = state.grants.get(code)
        if grant is None or grant.kind != "code":
            return self.error(400, 100, "Invalid verification code format.")
        if grant.used:
            return self.error(400, 100, "This authorization code has been used.", subcode=36009)
        grant.used = True
        if grant.expires_at is not None and grant.expires_at < time.time():
            return self.error(400, 100, "This authorization code has expired.", subcode=36007)
        if redirect_uri != grant.redirect_uri:
            return self.error(
                400,
                100,
                "Error validating verification code. Please make sure your redirect_uri is identical "
                "to the one you used in the OAuth dialog request",
                subcode=36008,
            )
        if grant.challenge is not None:
            verifier = self.arg("code_verifier") or ""
            if not hmac.compare_digest(s256(verifier).encode(), grant.challenge.encode()):
                return self.error(400, 100, "Invalid code verifier.")
        self._issue("short", grant.user_id, grant.scopes, SHORT_LIVED)

    post = get

    def _issue(self, kind: str, user_id: str, scopes: tuple[str, ...], lifetime: int) -> None:
        token = self.state.mint("EAAsbx", Grant(kind, user_id, time.time() + lifetime, scopes=scopes))
        self.write_json({"access_token": token, "token_type": "bearer", "expires_in": lifetime})


class MeHandler(SandboxHandler):
    """GET /{version}/me: the user (or, with a Page token, the Page)."""

    endpoint = "me"

    def get(self, version: str) -> None:
        grant = self.authenticate()
        if grant is None:
            return
        user = self.state.user
        if grant.kind == "page":
            page = next(p for p in user.pages if p.id == grant.page_id)
            node: dict[str, str] = {"id": page.id, "name": page.name, "category": page.category}
        else:
            node = {"id": user.id, "name": user.name}
        fields = [f for f in (self.arg("fields") or "id,name").split(",") if f]
        unknown = [f for f in fields if f not in node]
        if unknown:
            return self.error(
                400, 100, f"(#100) Tried accessing nonexisting field ({unknown[0]})", "GraphMethodException"
            )
        self.write_json({f: node[f] for f in fields})


class AccountsHandler(SandboxHandler):
    """GET /{version}/{me|user-id}/accounts: the user's Pages with Page tokens, paged."""

    endpoint = "accounts"

    def get(self, version: str, node: str) -> None:
        grant = self.authenticate()
        if grant is None:
            return
        if grant.kind == "page" or node not in ("me", grant.user_id):
            return self.error(
                400, 100, "(#100) Tried accessing nonexisting field (accounts)", "GraphMethodException"
            )
        fields = [f for f in (self.arg("fields") or "access_token,category,name,id").split(",") if f]
        if any(f not in ("id", "name", "category", "access_token") for f in fields):
            return self.error(400, 100, "(#100) Tried accessing nonexisting field", "GraphMethodException")
        after = self.arg("after") or ""
        try:
            limit = max(1, min(int(self.arg("limit") or "25"), self.state.page_size))
            start = int(base64.urlsafe_b64decode(after + "=" * (-len(after) % 4))) if after else 0
        except ValueError:
            start = -1
        if start < 0:
            return self.error(400, 100, "(#100) Invalid paging parameter", "GraphMethodException")
        pages = self.state.user.pages
        data = []
        for page in pages[start : start + limit]:
            token = self.state.mint(
                "EAApage", Grant("page", grant.user_id, None, grant.scopes, page_id=page.id)
            )
            full = {"id": page.id, "name": page.name, "category": page.category, "access_token": token}
            data.append({f: full[f] for f in fields})
        paging: dict[str, Any] = {
            "cursors": {"before": b64(str(start).encode()), "after": b64(str(start + limit).encode())}
        }
        if start + limit < len(pages):
            query = {"access_token": self.arg("access_token") or "", "fields": ",".join(fields)}
            query.update(limit=str(limit), after=paging["cursors"]["after"])
            base = self.state.paging_next_base or self.state.base_url
            paging["next"] = f"{base}/{version}/{grant.user_id}/accounts?{urllib.parse.urlencode(query)}"
        self.write_json({"data": data, "paging": paging})


class PermissionsHandler(SandboxHandler):
    """GET lists, DELETE revokes the grant (every token of the user): /{version}/{me|user-id}/permissions."""

    endpoint = "permissions"

    def _grant(self, node: str) -> Grant | None:
        grant = self.authenticate()
        if grant is not None and (grant.kind == "page" or node not in ("me", grant.user_id)):
            self.error(400, 100, "(#100) Cannot access this user's permissions", "GraphMethodException")
            return None
        return grant

    def get(self, version: str, node: str) -> None:
        grant = self._grant(node)
        if grant is not None:
            self.write_json({"data": [{"permission": s, "status": "granted"} for s in grant.scopes]})

    def delete(self, version: str, node: str) -> None:
        grant = self._grant(node)
        if grant is None:
            return
        for other in self.state.grants.values():
            if other.user_id == grant.user_id and other.kind != "code":
                other.revoked = True
        self.state.revoked_users.append(grant.user_id)
        self.write_json({"success": True})


def make_sandbox(base_url: str, version: str, app_secret: str | None = None) -> Sandbox:
    """The fake served at `base_url` (dialog and Graph under the same base), and the settings to use it."""
    state = FacebookSandboxState(base_url, SANDBOX_APP_ID, app_secret or secrets.token_hex(16), version)
    kw = {"state": state}
    handlers: list[tuple[str, Any, dict[str, Any]]] = [
        (rf"/{V}/dialog/oauth", DialogHandler, kw),
        (rf"/{V}/dialog/decide", DecideHandler, kw),
        (rf"/{V}/oauth/access_token", TokenHandler, kw),
        (rf"/{V}/me", MeHandler, kw),
        (rf"/{V}/(me|[0-9]+)/accounts", AccountsHandler, kw),
        (rf"/{V}/(me|[0-9]+)/permissions", PermissionsHandler, kw),
    ]
    settings = {
        "FACEBOOK_APP_ID": state.app_id,
        "FACEBOOK_APP_SECRET": state.app_secret,
        "FACEBOOK_DIALOG_BASE_URL": state.base_url,
        "FACEBOOK_GRAPH_BASE_URL": state.base_url,
        "FACEBOOK_GRAPH_VERSION": version,
    }
    return Sandbox(handlers=handlers, settings=settings, state=state)
