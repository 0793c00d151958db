"""A fake Shopify for `linkd demo`, the tests and the benchmarks: strict like the real one.

Served under a base URL, one path per shop (`{base}/{shop}/admin/...`), it offers:

- `GET  /{shop}/admin/oauth/authorize`      the install consent page (Approve / Cancel)
- `POST /{shop}/admin/oauth/access_token`   codes and refresh tokens → tokens (JSON or form body)
- `POST /{shop}/admin/api/{version}/graphql.json`  the `shop` query and `appUninstall`
- `DELETE /{shop}/admin/api_permissions/current.json`  the REST uninstall

It checks what Shopify checks (client id and secret, the redirect URI, single-use codes
that expire after 60 s and belong to one shop, rotating refresh tokens, live access
tokens) and signs its redirects and webhooks as Shopify does. Its memory, signing and
test controls are `ShopifySandboxState` (`providers/shopify/sandbox_state.py`), which
shares no code with the provider: a signing mistake on one side shows up as a failure.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
import urllib.parse
from typing import Any

import tornado.web
from tornado.escape import xhtml_escape

from linkd import Sandbox
from providers.shopify.sandbox_state import (
    FAILURE_MODES,
    INVALID_TOKEN,
    LOOPBACK,
    SCOPE,
    SHOP,
    VERSION,
    ShopifySandboxState,
    host_param,
    shop_name,
)

__all__ = ["FAILURE_MODES", "ShopifySandboxState", "handlers", "make_sandbox"]


def _select(value: Any, query: str) -> Any:
    """Keep only the fields the GraphQL query names (a crude selection, enough for a fake)."""
    if not isinstance(value, dict):
        return value
    return {k: _select(v, query) for k, v in value.items() if re.search(rf"\b{re.escape(k)}\b", query)}


class _Handler(tornado.web.RequestHandler):
    endpoint = ""

    def initialize(self, state: ShopifySandboxState) -> None:
        self.state = state

    def check_xsrf_cookie(self) -> None:
        """An API of another site, not a form of linkd's: Tornado's XSRF check does not apply."""

    def compute_etag(self) -> None:
        return None

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Content-Type-Options", "nosniff")

    async def prepare(self) -> None:
        self.state.counters[self.endpoint] += 1
        if self.state.latency:
            await asyncio.sleep(self.state.latency)

    def answer(self, status: int, data: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(data))

    async def forced_failure(self) -> bool:
        """Play the next queued failure for this endpoint; True when the answer was sent."""
        queue = self.state.failures.get(self.endpoint)
        if not queue:
            return False
        mode = queue.popleft()
        if mode == "hang":
            await asyncio.sleep(self.state.hang_seconds)  # the client gave up long ago
            self.answer(504, {"errors": "Timeout"})
        elif mode == "500":
            self.answer(500, {"errors": "Internal Server Error"})
        elif mode == "garbage":
            self.set_header("Content-Type", "text/html")
            self.finish("<html><body>Oops, not JSON {")
        elif mode == "redirect":
            self.redirect("https://accounts.shopify.com/store-login")
        else:
            self.answer(400, {"error": "invalid_grant", "error_description": "Forced by the sandbox."})
        return True

    def valid_shop(self, shop: str) -> bool:
        if SHOP.fullmatch(shop):
            return True
        self.answer(404, {"errors": "Not Found"})
        return False


class AuthorizeHandler(_Handler):
    endpoint = "authorize"

    def get(self, shop: str) -> None:
        if not self.valid_shop(shop):
            return
        pairs = urllib.parse.parse_qsl(self.request.query, keep_blank_values=True)
        params = dict(pairs)
        if len(params) != len(pairs):
            return self.error_page("A parameter is repeated.")
        if not hmac.compare_digest(params.get("client_id", "").encode(), self.state.api_key.encode()):
            return self.error_page("The client_id is invalid.")
        redirect_uri = params.get("redirect_uri", "")
        if not self.redirect_allowed(redirect_uri):
            return self.error_page("The redirect_uri is not whitelisted for this app.")
        scopes = [s.strip() for s in params.get("scope", "").split(",") if s.strip()]
        if not scopes or not all(SCOPE.fullmatch(s) for s in scopes):
            return self.error_page("The scope is invalid.")
        decision = params.get("decision")
        if self.state.auto_approve or params.get("sandbox_auto") == "1":
            decision = "approve"
        if decision == "approve":
            code = self.state.issue_code(shop, self.state.grant_scopes or ",".join(scopes))
            back = {"code": code, "host": host_param(shop), "shop": shop}
        elif decision == "cancel":
            back = {
                "error": "access_denied",
                "error_description": "The merchant declined the installation.",
                "shop": shop,
            }
        else:
            return self.consent_page(shop, scopes, params)
        if "state" in params:
            back["state"] = params["state"]
        joiner = "&" if "?" in redirect_uri else "?"
        self.redirect(redirect_uri + joiner + urllib.parse.urlencode(self.state.signed_params(back)))

    def redirect_allowed(self, uri: str) -> bool:
        if self.state.redirect_uri is not None:
            return uri == self.state.redirect_uri  # byte-identical, as registered
        parts = urllib.parse.urlsplit(uri)
        return parts.scheme in ("http", "https") and parts.hostname in LOOPBACK and not parts.fragment

    def error_page(self, message: str) -> None:
        self.set_status(400)
        self.page("Oauth error invalid_request", f"<p>{xhtml_escape(message)}</p>")

    def consent_page(self, shop: str, scopes: list[str], params: dict[str, str]) -> None:
        e = xhtml_escape
        app = e(self.state.app_name)
        items = "".join(f"<li>{e(_scope_text(s))} <code>{e(s)}</code></li>" for s in scopes)
        hidden = "".join(
            f'<input type="hidden" name="{e(k)}" value="{e(v)}">'
            for k, v in params.items()
            if k != "decision"
        )
        body = f"""<p class="lead"><strong>{app}</strong> is asking for permission to access
<strong>{e(shop_name(shop))}</strong> <span class="muted">({e(shop)})</span>.</p>
<h2>It will be able to</h2><ul>{items}</ul>
<form method="get" action="{e(self.request.path)}">{hidden}
<button class="secondary" name="decision" value="cancel">Cancel</button>
<button class="primary" name="decision" value="approve">Install app</button></form>
<p class="muted small">This is linkd's local sandbox of Shopify: no real store is involved.</p>"""
        self.page(f"Install {app}?", body)

    def page(self, title: str, body: str) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header(
            "Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
        )
        self.set_header("X-Frame-Options", "DENY")
        self.finish(f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title} · Shopify sandbox</title>
<style>{PAGE_STYLE}</style></head><body><main><p class="brand">shopify <span>sandbox</span></p>
<h1>{title}</h1>{body}</main></body></html>""")


PAGE_STYLE = " ".join(
    [
        "body{margin:0;background:#f1f1f1;color:#303030;",
        'font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif}',
        "main{max-width:30rem;margin:3rem auto;background:#fff;border-radius:12px;padding:1.5rem 2rem;",
        "box-shadow:0 1px 3px rgba(0,0,0,.15)}",
        ".brand{font-weight:700;color:#008060;margin:0}",
        ".brand span{font-weight:400;color:#616161;font-size:.8em;border:1px solid #ccc;",
        "border-radius:4px;padding:0 .3em}",
        "h1{font-size:1.3rem} h2{font-size:1rem;margin-top:1.5rem} ul{padding-left:1.2rem}",
        "code{color:#616161;font-size:.85em}",
        "form{display:flex;justify-content:flex-end;gap:.5rem;margin-top:1.5rem}",
        "button{font:inherit;border-radius:8px;padding:.5rem 1rem;cursor:pointer;",
        "border:1px solid #8a8a8a;background:#fff}",
        "button.primary{background:#303030;color:#fff;border-color:#303030}",
        ".muted{color:#616161} .small{font-size:.8em}",
    ]
)


def _scope_text(scope: str) -> str:
    access, _, what = scope.partition("_")
    verb = {"read": "View", "write": "View and edit"}.get(access, access.capitalize())
    return f"{verb} {what.replace('_', ' ')}" if what else scope


class AccessTokenHandler(_Handler):
    endpoint = "access_token"

    async def post(self, shop: str) -> None:
        if await self.forced_failure() or not self.valid_shop(shop):
            return
        params = self.params()
        if params is None:
            return self.answer(400, {"error": "invalid_request", "error_description": "Malformed body."})
        client_ok = hmac.compare_digest(params.get("client_id", "").encode(), self.state.api_key.encode())
        secret_ok = hmac.compare_digest(
            params.get("client_secret", "").encode(), self.state.api_secret.encode()
        )
        if not (client_ok and secret_ok):
            return self.answer(
                401, {"error": "invalid_client", "error_description": "Client authentication failed."}
            )
        grant_type = params.get("grant_type", "authorization_code")
        if grant_type == "authorization_code":
            return self.exchange_code(shop, params)
        if grant_type == "refresh_token":
            return self.rotate(shop, params.get("refresh_token"))
        self.answer(400, {"error": "unsupported_grant_type"})

    def params(self) -> dict[str, str] | None:
        """JSON or form body (or query parameters), as Shopify accepts all three."""
        content_type = self.request.headers.get("Content-Type", "")
        try:
            if content_type.startswith("application/json"):
                data = json.loads(self.request.body or b"{}")
                if not isinstance(data, dict):
                    return None
                return {str(k): str(v) for k, v in data.items() if v is not None}
            body = self.request.body.decode("utf-8") or self.request.query
            return dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
        except (ValueError, UnicodeDecodeError):
            return None

    def exchange_code(self, shop: str, params: dict[str, str]) -> None:
        grant = self.state.codes.get(params.get("code", ""))
        if grant is not None and grant.used:  # a replayed code: revoke what it gave (RFC 6749 §4.1.2)
            for token in grant.tokens:
                self.state.tokens[token].alive = False
        if grant is None or grant.used or grant.shop != shop or grant.expires_at < time.time():
            message = "The authorization code was not found or was already used"
            return self.answer(400, {"error": "invalid_request", "error_description": message})
        grant.used = True
        answer = self.state.issue_tokens(shop, grant.scope, params.get("expiring") in ("1", "true", "True"))
        grant.tokens.extend(v for k, v in answer.items() if k in ("access_token", "refresh_token"))
        self.answer(200, answer)

    def rotate(self, shop: str, refresh_token: str | None) -> None:
        info = self.state.token(refresh_token, shop, "refresh")
        if info is None:
            message = "The refresh token is invalid, expired, revoked or was already used."
            return self.answer(400, {"error": "invalid_grant", "error_description": message})
        info.alive = False  # rotation: a refresh token is spent once
        self.answer(200, self.state.issue_tokens(shop, info.scope, expiring=True))


class _AdminHandler(_Handler):
    def authorised(self, shop: str) -> bool:
        token = self.request.headers.get("X-Shopify-Access-Token")
        if self.state.token(token, shop, "access") is not None:
            return True
        self.answer(401, {"errors": INVALID_TOKEN})
        return False


class GraphQLHandler(_AdminHandler):
    endpoint = "graphql"

    async def post(self, shop: str, version: str) -> None:
        if await self.forced_failure() or not self.valid_shop(shop):
            return
        if not VERSION.fullmatch(version):
            return self.answer(404, {"errors": "Not Found"})
        self.state.api_versions[version] += 1
        if not self.authorised(shop):
            return
        try:
            query = json.loads(self.request.body or b"{}").get("query")
        except (ValueError, AttributeError):
            query = None
        if not isinstance(query, str):
            return self.answer(400, {"errors": {"query": "Required parameter missing or invalid"}})
        if re.search(r"\bappUninstall\b", query):
            self.state.uninstall(shop)
            app = {"id": "gid://shopify/App/1"}
            return self.answer(200, {"data": {"appUninstall": {"app": app, "userErrors": []}}})
        if re.search(r"\bshop\b", query):
            return self.answer(200, {"data": {"shop": _select(self.state.shop_data(shop), query)}})
        self.answer(
            200, {"errors": [{"message": "This sandbox answers only the shop query and appUninstall."}]}
        )


class ApiPermissionsHandler(_AdminHandler):
    endpoint = "api_permissions"

    def delete(self, shop: str) -> None:
        if self.valid_shop(shop) and self.authorised(shop):
            self.state.uninstall(shop)
            self.answer(200, {})


def handlers(state: ShopifySandboxState) -> list[tuple[str, Any, dict[str, Any]]]:
    kw = {"state": state}
    return [
        (r"/([^/]+)/admin/oauth/authorize", AuthorizeHandler, kw),
        (r"/([^/]+)/admin/oauth/access_token", AccessTokenHandler, kw),
        (r"/([^/]+)/admin/api/([^/]+)/graphql\.json", GraphQLHandler, kw),
        (r"/([^/]+)/admin/api_permissions/current\.json", ApiPermissionsHandler, kw),
    ]


def make_sandbox(base_url: str, state: ShopifySandboxState | None = None) -> Sandbox:
    """The fake served at `base_url`, and the settings that point the provider at it."""
    state = state or ShopifySandboxState()
    settings = {
        "SHOPIFY_API_KEY": state.api_key,
        "SHOPIFY_API_SECRET": state.api_secret,
        "SHOPIFY_BASE_URL": f"{base_url.rstrip('/')}/{{shop}}",
    }
    return Sandbox(handlers=handlers(state), settings=settings, state=state)
