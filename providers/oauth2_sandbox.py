"""A fake OAuth 2.0 platform, shaped after any `OAuth2Provider` (coded or declared in TOML).

`make_sandbox(cls, base_url)` serves the endpoints the provider declares, at the paths of
its URLs under `base_url` (one path segment per account hint first, when it has one), and
returns the settings that point the provider there. It is strict like a real server:

- the client authenticates exactly as the provider declares (`client_secret_post` or
  `client_secret_basic`), with the secret it was given;
- codes are single-use, expire after 60 s, and are bound to their redirect URI
  (byte-identical at the token endpoint), their PKCE challenge (S256 only) and their hint;
- refresh tokens rotate when the provider says so (a spent one is refused), and
  revocation (RFC 7009) of a refresh token ends its whole grant.

It shares no code with the provider, so a mistake on one side shows up as a failure.
`FakeOAuth` is the memory and the test controls: `counts` per endpoint, every value it
`minted`, the `token_requests` it received, what was `revoked`, `next_subject`, `deny_next`,
and `failures` (per endpoint, modes of FAILURE_MODES played once each). Each endpoint is its
own handler class (`AuthorizeHandler`, `TokenHandler`, `UserInfoHandler`, `RevokeHandler`,
initialised with `fake=`) so a test can wrap one, e.g. to hold the token endpoint.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import tornado.web

from linkd import Sandbox

CODE_TTL = 60.0
FAILURE_MODES = ("500", "garbage", "invalid_grant", "error_200")


@dataclass
class Grant:
    subject: str
    hint: str | None
    scope: str
    access: set[str] = field(default_factory=set)
    refresh: str | None = None


class FakeOAuth:
    """The fake's memory and controls."""

    def __init__(self, provider: Any, client_id: str, client_secret: str) -> None:
        self.title = provider.display_name()
        self.client_id = client_id
        self.client_secret = client_secret
        self.client_auth: str = provider.client_auth
        self.pkce: bool = provider.pkce
        self.rotates: bool = provider.rotates_refresh_tokens
        self.issues_refresh: bool = provider.refresh_enabled
        self.separator: str = provider.scope_separator
        self.id_pointer: str = provider.account_id_pointer
        self.name_pointer: str | None = provider.account_name_pointer
        self.account_in_token_answer = not provider.userinfo_url
        self.codes: dict[str, dict[str, Any]] = {}
        self.access: dict[str, Grant] = {}
        self.refresh: dict[str, Grant] = {}
        self.minted: list[str] = []
        self.counts: dict[str, int] = {}
        self.token_requests: list[dict[str, str]] = []
        self.revoked: list[str] = []
        self.next_subject = "user-1"
        self.deny_next = False
        self.expires_in = 3600
        self.failures: dict[
            str, list[str]
        ] = {}  # endpoint → modes (FAILURE_MODES) played once each, in order

    def count(self, endpoint: str) -> None:
        self.counts[endpoint] = self.counts.get(endpoint, 0) + 1

    def mint(self, prefix: str) -> str:
        value = f"{prefix}_{secrets.token_urlsafe(24)}"
        self.minted.append(value)
        return value

    def account_document(self, subject: str) -> dict[str, Any]:
        """The account as the provider's pointers expect to find it."""
        document: dict[str, Any] = {}
        _place(document, self.id_pointer, subject)
        if self.name_pointer:
            _place(document, self.name_pointer, f"{self.title} {subject}")
        return document

    def issue(self, grant: Grant, *, new_refresh: bool) -> dict[str, Any]:
        access = self.mint("at")
        grant.access.add(access)
        self.access[access] = grant
        answer: dict[str, Any] = {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "scope": grant.scope,
        }
        if self.issues_refresh and (new_refresh or grant.refresh is None):
            if grant.refresh:
                self.refresh.pop(grant.refresh, None)  # rotation: the spent one is refused from now on
            grant.refresh = self.mint("rt")
            self.refresh[grant.refresh] = grant
            answer["refresh_token"] = grant.refresh
        if self.account_in_token_answer:
            answer.update(self.account_document(grant.subject))
        return answer

    def end_grant(self, grant: Grant) -> None:
        for token in grant.access:
            self.access.pop(token, None)
        if grant.refresh:
            self.refresh.pop(grant.refresh, None)


def _place(document: dict[str, Any], pointer: str, value: Any) -> None:
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]
    for token in tokens[:-1]:
        document = document.setdefault(token, {})
    document[tokens[-1]] = value


def _same(a: str | None, b: str) -> bool:
    return a is not None and hmac.compare_digest(a.encode(), b.encode())


class _Fake(tornado.web.RequestHandler):
    """One endpoint of the fake; the subclasses below are its four endpoints."""

    endpoint = ""

    def initialize(self, fake: FakeOAuth) -> None:
        self.fake = fake

    def check_xsrf_cookie(self) -> None:
        """Another site's API, not a form of linkd's."""

    def compute_etag(self) -> None:
        return None

    def prepare(self) -> None:
        self.fake.count(self.endpoint)
        self.forced_failure()  # a finished answer ends the request here

    def answer(self, status: int, data: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(data))

    def forced_failure(self) -> None:
        queue = self.fake.failures.get(self.endpoint)
        if not queue:
            return
        mode = queue.pop(0)
        if mode == "500":
            self.answer(500, {"error": "server_error"})
        elif mode == "garbage":
            self.set_header("Content-Type", "text/html")
            self.finish("<html>Oops {")
        elif mode == "error_200":
            self.answer(200, {"ok": False, "error": "invalid_grant"})
        else:
            self.answer(400, {"error": "invalid_grant", "error_description": "Forced by the sandbox."})

    def pairs(self, source: str) -> dict[str, str] | None:
        """Strictly parsed parameters; None when one is repeated (a real server refuses that)."""
        pairs = urllib.parse.parse_qsl(source, keep_blank_values=True)
        params = dict(pairs)
        return params if len(params) == len(pairs) else None

    def authenticated(self, form: dict[str, str]) -> bool:
        """The client authenticated exactly the way it is registered to."""
        fake = self.fake
        header = self.request.headers.get("Authorization", "")
        if fake.client_auth == "client_secret_basic":
            if not header.startswith("Basic ") or "client_secret" in form:
                return False
            try:
                decoded = base64.b64decode(header[6:], validate=True).decode()
            except ValueError:
                return False
            client_id, _, secret = decoded.partition(":")
            return _same(urllib.parse.unquote_plus(client_id), fake.client_id) and _same(
                urllib.parse.unquote_plus(secret), fake.client_secret
            )
        return (
            not header
            and _same(form.get("client_id"), fake.client_id)
            and _same(form.get("client_secret"), fake.client_secret)
        )

    def form(self) -> dict[str, str] | None:
        if not self.request.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            return None
        return self.pairs(self.request.body.decode("utf-8", "replace"))


class AuthorizeHandler(_Fake):
    """The consent step: approves at once (or declines, `deny_next`) and redirects back."""

    endpoint = "authorize"

    def get(self, hint: str | None = None) -> None:
        fake, params = self.fake, self.pairs(self.request.query)
        if params is None or params.get("response_type") != "code":
            return self.answer(400, {"error": "invalid_request"})
        if not _same(params.get("client_id"), fake.client_id):
            return self.answer(400, {"error": "invalid_client"})  # never redirect for a wrong client
        redirect_uri = params.get("redirect_uri", "")
        if urllib.parse.urlsplit(redirect_uri).scheme not in ("http", "https"):
            return self.answer(400, {"error": "invalid_request", "error_description": "redirect_uri"})
        challenge = params.get("code_challenge")
        method = params.get("code_challenge_method")
        if (fake.pkce or challenge or method) and (
            method != "S256" or not re.fullmatch(r"[A-Za-z0-9_-]{43}", challenge or "")
        ):
            return self.answer(400, {"error": "invalid_request", "error_description": "PKCE S256 required"})
        back: dict[str, str] = {"state": params.get("state", "")}
        if fake.deny_next:
            fake.deny_next = False
            back.update(error="access_denied", error_description="The user said <b>no</b>.")
        else:
            code = fake.mint("code")
            fake.codes[code] = {
                "redirect_uri": redirect_uri,
                "challenge": challenge,
                "subject": fake.next_subject,
                "hint": hint,
                "scope": " ".join(s for s in params.get("scope", "").split(fake.separator) if s),
                "expires": time.time() + CODE_TTL,
            }
            back["code"] = code
        self.redirect(f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{urllib.parse.urlencode(back)}")


class TokenHandler(_Fake):
    """Codes and refresh tokens → tokens, for a client that authenticates as registered."""

    endpoint = "token"

    def post(self, hint: str | None = None) -> None:
        fake, form = self.fake, self.form()
        if form is None:
            return self.answer(400, {"error": "invalid_request"})
        fake.token_requests.append(form)
        if not self.authenticated(form):
            return self.answer(401, {"error": "invalid_client"})
        if form.get("grant_type") == "authorization_code":
            grant_data = fake.codes.pop(form.get("code", ""), None)  # spent even when the rest is wrong
            if (
                grant_data is None
                or grant_data["expires"] < time.time()
                or grant_data["redirect_uri"] != form.get("redirect_uri")
                or grant_data["hint"] != hint
            ):
                return self.answer(400, {"error": "invalid_grant"})
            if grant_data["challenge"] is not None:
                digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
                if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant_data["challenge"]:
                    return self.answer(400, {"error": "invalid_grant"})
            elif "code_verifier" in form:
                return self.answer(400, {"error": "invalid_grant"})
            grant = Grant(grant_data["subject"], hint, grant_data["scope"])
            return self.answer(200, fake.issue(grant, new_refresh=True))
        if form.get("grant_type") == "refresh_token":
            held = fake.refresh.get(form.get("refresh_token", ""))
            if held is None or held.hint != hint:
                return self.answer(400, {"error": "invalid_grant"})
            return self.answer(200, fake.issue(held, new_refresh=fake.rotates))
        return self.answer(400, {"error": "unsupported_grant_type"})


class UserInfoHandler(_Fake):
    """The account behind a live access token, where the provider's pointers look for it."""

    endpoint = "userinfo"

    def get(self, hint: str | None = None) -> None:
        header = self.request.headers.get("Authorization", "")
        grant = self.fake.access.get(header[7:]) if header.startswith("Bearer ") else None
        if grant is None or grant.hint != hint:
            return self.answer(401, {"error": "invalid_token"})
        self.answer(200, self.fake.account_document(grant.subject))


class RevokeHandler(_Fake):
    """RFC 7009 revocation: a refresh token ends its whole grant."""

    endpoint = "revoke"

    def post(self, hint: str | None = None) -> None:
        fake, form = self.fake, self.form()
        if form is None or "token" not in form:
            return self.answer(400, {"error": "invalid_request"})
        if not self.authenticated(form):
            return self.answer(401, {"error": "invalid_client"})
        token = form["token"]
        grant = fake.refresh.get(token)
        if grant is not None:
            fake.end_grant(grant)
        elif token in fake.access:
            fake.access.pop(token).access.discard(token)
        fake.revoked.append(token)
        self.set_status(200)  # RFC 7009 §2.2: 200 for an unknown token too, and the body is ignored
        self.finish()


HANDLERS: dict[str, type[_Fake]] = {
    "authorize": AuthorizeHandler,
    "token": TokenHandler,
    "userinfo": UserInfoHandler,
    "revoke": RevokeHandler,
}


def make_sandbox(provider: Any, base_url: str) -> Sandbox:
    """Handlers (relative to `base_url`), settings and state of a fake of `provider`, an OAuth2Provider."""
    fake = FakeOAuth(provider, client_id=f"cid{secrets.token_hex(8)}", client_secret=secrets.token_hex(24))
    hint = provider.account_hint
    handlers: list[tuple[str, Any, dict[str, Any]]] = []
    for endpoint, url in (
        ("authorize", provider.authorize_url),
        ("token", provider.token_url),
        ("userinfo", provider.userinfo_url),
        ("revoke", provider.revoke_url),
    ):
        if not url:
            continue
        path = re.escape(urllib.parse.urlsplit(url).path or "/")
        if hint:  # a hint inside the path is the same value as the leading segment
            path = r"/(?P<hint>[^/]+)" + path.replace(re.escape("{" + hint + "}"), "[^/]+")
        if any(path == taken for taken, _, _ in handlers):
            raise ValueError(
                f"{provider.name}: two endpoints share the path {path}; the fake cannot serve both"
            )
        handlers.append((path, HANDLERS[endpoint], {"fake": fake}))
    settings = {
        provider.client_id_setting: fake.client_id,
        provider.client_secret_setting: fake.client_secret,
        provider.base_url_setting: base_url.rstrip("/") + (f"/{{{hint}}}" if hint else ""),
    }
    return Sandbox(handlers=handlers, settings=settings, state=fake)
