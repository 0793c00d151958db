"""A third-party linkd plugin: a plain OAuth 2.0 platform with PKCE, and a fake of it.

It is installed with pip into the test environment and discovered through the
`linkd` entry-point group, exactly as a real plugin would be.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import urllib.parse
from typing import Any

import tornado.web

from linkd import (
    Account,
    Callback,
    Provider,
    ProviderError,
    ReconnectRequired,
    Sandbox,
    Setting,
    TokenSet,
    hookimpl,
)
from linkd.upstream import base_url_problem


class ExampleProvider(Provider):
    name = "example"
    title = "Example"
    settings = (
        Setting("EXAMPLE_CLIENT_ID"),
        Setting("EXAMPLE_CLIENT_SECRET", secret=True),
        Setting("EXAMPLE_BASE_URL", validate=base_url_problem),
    )
    pkce = True

    def _url(self, path: str) -> str:
        return self.setting("EXAMPLE_BASE_URL").rstrip("/") + path

    def authorization_url(self, *, state: str, context: Any, code_challenge: str | None) -> str:
        query = {
            "response_type": "code",
            "client_id": self.setting("EXAMPLE_CLIENT_ID"),
            "redirect_uri": self.context.redirect_uri,
            "state": state,
            "scope": "profile",
            "code_challenge": code_challenge or "",
            "code_challenge_method": "S256",
        }
        return self._url("/authorize?") + urllib.parse.urlencode(query)

    async def _token(self, form: dict[str, str]) -> TokenSet:
        form = {
            **form,
            "client_id": self.setting("EXAMPLE_CLIENT_ID"),
            "client_secret": self.setting("EXAMPLE_CLIENT_SECRET"),
        }
        try:
            data = await self.upstream.post_json(self._url("/token"), form=form)
        except ProviderError as exc:
            response = exc.data.get("response")
            if response is not None and b"invalid_grant" in response.body:
                raise ReconnectRequired() from None
            raise
        if not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
            raise ProviderError("The token answer has no access token.")
        return TokenSet(
            access_token=data["access_token"],
            refresh_token=data.get("refresh_token"),
            expires_at=time.time() + float(data["expires_in"]) if data.get("expires_in") else None,
            scopes=tuple(str(data.get("scope", "")).split()),
        )

    async def complete(self, callback: Callback) -> list[Account]:
        tokens = await self._token(
            {
                "grant_type": "authorization_code",
                "code": callback.code,
                "redirect_uri": callback.redirect_uri,
                "code_verifier": callback.code_verifier or "",
            }
        )
        me = await self.upstream.get_json(
            self._url("/userinfo"), headers={"Authorization": f"Bearer {tokens.access_token}"}
        )
        if not isinstance(me, dict) or "sub" not in me:
            raise ProviderError("The user info has no subject.")
        return [Account(id=str(me["sub"]), name=str(me.get("name", me["sub"])), tokens=tokens)]

    async def refresh(self, account_id: str, tokens: TokenSet) -> TokenSet:
        return await self._token({"grant_type": "refresh_token", "refresh_token": tokens.refresh_token or ""})

    async def revoke(self, account_id: str, tokens: TokenSet) -> None:
        await self.upstream.request("POST", self._url("/revoke"), form={"token": tokens.access_token})

    @classmethod
    def sandbox(cls, base_url: str) -> Sandbox:
        state = FakeOAuth(client_id="example-client", client_secret=secrets.token_urlsafe(24))
        kw = {"fake": state}
        return Sandbox(
            handlers=[
                (r"/authorize", AuthorizeHandler, kw),
                (r"/token", TokenHandler, kw),
                (r"/userinfo", UserInfoHandler, kw),
                (r"/revoke", RevokeHandler, kw),
            ],
            settings={
                "EXAMPLE_CLIENT_ID": state.client_id,
                "EXAMPLE_CLIENT_SECRET": state.client_secret,
                "EXAMPLE_BASE_URL": base_url,
            },
            state=state,
        )


@hookimpl
def register_providers(register):
    register(ExampleProvider)


class FakeOAuth:
    """A strict little OAuth 2.0 server: single-use codes, PKCE S256, rotating refresh tokens."""

    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.codes: dict[str, dict[str, Any]] = {}
        self.access: dict[str, str] = {}
        self.refresh: dict[str, str] = {}
        self.minted: list[str] = []
        self.counts: dict[str, int] = {}
        self.next_subject = "user-1"
        self.token_requests: list[dict[str, str]] = []

    def count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def mint(self, prefix: str) -> str:
        value = f"{prefix}_{secrets.token_urlsafe(24)}"
        self.minted.append(value)
        return value


class _Fake(tornado.web.RequestHandler):
    def initialize(self, fake: FakeOAuth) -> None:
        self.fake = fake

    def check_xsrf_cookie(self) -> None:
        pass

    def fail(self, status: int, error: str) -> None:
        self.set_status(status)
        self.finish({"error": error})


class AuthorizeHandler(_Fake):
    def get(self) -> None:
        self.fake.count("authorize")
        if self.get_query_argument("client_id", "") != self.fake.client_id:
            return self.fail(400, "invalid_client")
        if self.get_query_argument("code_challenge_method", "") != "S256":
            return self.fail(400, "invalid_request")
        code = self.fake.mint("code")
        self.fake.codes[code] = {
            "redirect_uri": self.get_query_argument("redirect_uri"),
            "challenge": self.get_query_argument("code_challenge"),
            "subject": self.fake.next_subject,
            "expires": time.time() + 60,
        }
        query = urllib.parse.urlencode({"code": code, "state": self.get_query_argument("state", "")})
        self.redirect(f"{self.get_query_argument('redirect_uri')}?{query}")


class TokenHandler(_Fake):
    def post(self) -> None:
        self.fake.count("token")
        form = {k: self.get_body_argument(k) for k in self.request.body_arguments}
        self.fake.token_requests.append(form)
        if (
            form.get("client_id") != self.fake.client_id
            or form.get("client_secret") != self.fake.client_secret
        ):
            return self.fail(401, "invalid_client")
        if form.get("grant_type") == "authorization_code":
            grant = self.fake.codes.pop(form.get("code", ""), None)
            if (
                grant is None
                or grant["expires"] < time.time()
                or grant["redirect_uri"] != form.get("redirect_uri")
            ):
                return self.fail(400, "invalid_grant")
            digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant["challenge"]:
                return self.fail(400, "invalid_grant")
            subject = grant["subject"]
        elif form.get("grant_type") == "refresh_token":
            subject = self.fake.refresh.pop(form.get("refresh_token", ""), "")
            if not subject:
                return self.fail(400, "invalid_grant")
        else:
            return self.fail(400, "unsupported_grant_type")
        access, refresh = self.fake.mint("at"), self.fake.mint("rt")
        self.fake.access[access] = subject
        self.fake.refresh[refresh] = subject
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps(
                {
                    "access_token": access,
                    "refresh_token": refresh,
                    "expires_in": 3600,
                    "scope": "profile",
                    "token_type": "bearer",
                }
            )
        )


class UserInfoHandler(_Fake):
    def get(self) -> None:
        self.fake.count("userinfo")
        token = self.request.headers.get("Authorization", "").removeprefix("Bearer ")
        subject = self.fake.access.get(token)
        if not subject:
            return self.fail(401, "invalid_token")
        self.finish({"sub": subject, "name": f"Example {subject}"})


class RevokeHandler(_Fake):
    def post(self) -> None:
        self.fake.count("revoke")
        self.fake.access.pop(self.get_body_argument("token", ""), None)
        self.finish({})
