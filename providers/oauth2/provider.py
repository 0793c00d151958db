"""`OAuth2Provider`: a plain OAuth 2.0 platform (authorization code grant) as linkd's `Provider`.

The class attributes and the calls to the platform are inherited from `OAuth2Client`
(`client.py`); this module derives the settings from the name and runs the flow.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from linkd import (
    Account,
    Args,
    BadRequest,
    Callback,
    NotFound,
    ProviderError,
    ReconnectRequired,
    Sandbox,
    Setting,
    TokenSet,
)

from .checks import credential_problem, plain_url_problem, redirect_uri_problem, setting_prefix
from .client import OAuth2Client

log = logging.getLogger("linkd.providers.oauth2")


class OAuth2Provider(OAuth2Client):
    """A plain OAuth 2.0 platform (authorization code grant), configured by class attributes.

    The smallest subclass sets `name`, `authorize_url`, `token_url` and usually
    `userinfo_url`, `scopes` and `account_id_pointer`. Settings default to
    `{NAME}_CLIENT_ID`, `{NAME}_CLIENT_SECRET`, `{NAME}_REDIRECT_URI` (optional) and
    `{NAME}_BASE_URL` (optional: when set, every endpoint keeps its path and query but is
    served from that base, which is how tests, staging and `linkd demo` point it at a fake).
    Every attribute and its default is declared on `OAuth2Client` (`client.py`).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Derive the setting names from `name`, unless the subclass names them itself."""
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if not isinstance(name, str):
            return
        prefix = setting_prefix(name)
        for attr, suffix in (
            ("client_id_setting", "CLIENT_ID"),
            ("client_secret_setting", "CLIENT_SECRET"),
            ("base_url_setting", "BASE_URL"),
            ("redirect_uri_setting", "REDIRECT_URI"),
        ):
            if attr not in cls.__dict__:
                setattr(cls, attr, f"{prefix}_{suffix}")
        if "settings" not in cls.__dict__:
            cls.settings = cls.default_settings()

    @classmethod
    def default_settings(cls) -> tuple[Setting, ...]:
        hint = cls.account_hint
        return (
            Setting(cls.client_id_setting, help="The app's client ID.", validate=credential_problem),
            Setting(
                cls.client_secret_setting,
                secret=True,
                help="The app's client secret.",
                validate=credential_problem,
            ),
            Setting(
                cls.redirect_uri_setting or f"{setting_prefix(cls.name)}_REDIRECT_URI",
                default="",
                help=f"Callback URL registered with the platform (default: {{public}}/{cls.name}/callback).",
                validate=redirect_uri_problem,
            ),
            Setting(
                cls.base_url_setting,
                default="",
                help="Serve every endpoint from this base instead (tests, staging, sandbox).",
                validate=lambda value: plain_url_problem(value, hint),
            ),
        )

    @classmethod
    def sandbox(cls, base_url: str) -> Sandbox | None:
        from providers.oauth2_sandbox import make_sandbox

        try:
            return make_sandbox(cls, base_url)
        except ValueError as exc:  # endpoints the generic fake cannot tell apart: no sandbox, not a crash
            log.warning("no sandbox for %s: %s", cls.name, exc)
            return None

    # the connect flow -----------------------------------------------------------------------------
    def login_context(self, args: Args, account: str | None) -> dict[str, Any]:
        """Without an account hint: no parameters. With one: from the path or `hint_query`, validated."""
        if not self.account_hint:
            if account is not None:
                raise NotFound()
            return {}
        from_query = args.get(self.hint_query) if self.hint_query else None
        given = {v for v in (account, from_query) if v is not None}
        if len(given) > 1:
            raise BadRequest(f"The {self.account_hint} in the address and in the query differ.")
        if not given:
            where = f" or ?{self.hint_query}=…" if self.hint_query else ""
            raise BadRequest(
                f"Which {self.account_hint}? Use /{self.name}/{{{self.account_hint}}}/login{where}."
            )
        hint = given.pop()
        if not self.valid_hint(hint):
            raise BadRequest(f"This {self.account_hint} is not valid.")
        return {"hint": hint}

    def authorization_url(self, *, state: str, context: Mapping[str, Any], code_challenge: str | None) -> str:
        query: dict[str, str] = dict(self.authorize_params)
        query.update(
            response_type="code",
            client_id=self.setting(self.client_id_setting),
            redirect_uri=self.context.redirect_uri,
            state=state,
        )
        if self.scopes:
            query["scope"] = self.scope_separator.join(self.scopes)
        if code_challenge:
            query.update(code_challenge=code_challenge, code_challenge_method="S256")
        url = self.endpoint(self.authorize_url, context.get("hint"))
        return f"{url}{'&' if '?' in url else '?'}{urllib.parse.urlencode(query)}"

    async def complete(self, callback: Callback) -> list[Account]:
        # the hint the flow started with (bound to the state), never anything from the callback
        hint = callback.context.get("hint") if self.account_hint else None
        form = {
            "grant_type": "authorization_code",
            "code": callback.code,
            "redirect_uri": callback.redirect_uri,
        }
        if callback.code_verifier:
            form["code_verifier"] = callback.code_verifier
        data = await self.token_request(form, hint)
        tokens = self.token_set(data, hint)
        source: Any = data
        if self.userinfo_url:
            target = self.endpoint(self.userinfo_url, hint)
            source = await self.upstream.get_json(
                target,
                headers={"Authorization": f"Bearer {tokens.access_token}"},
                allowed_hosts=[urllib.parse.urlsplit(target).netloc],
            )
        return [self.account(source, tokens, hint)]

    # after the connect ----------------------------------------------------------------------------
    def can_refresh(self, tokens: TokenSet) -> bool:
        if not (self.refresh_enabled and tokens.refresh_token):
            return False
        return tokens.refresh_expires_at is None or tokens.refresh_expires_at > time.time()

    async def refresh(self, account_id: str, tokens: TokenSet) -> TokenSet:
        if not (self.refresh_enabled and tokens.refresh_token):
            raise ReconnectRequired()
        hint = self._hint_of(tokens)
        data = await self.token_request(
            {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}, hint, refreshing=True
        )
        fresh = self.token_set(data, hint)
        if self.rotates_refresh_tokens and not fresh.refresh_token:
            raise ProviderError("The platform spent the refresh token without issuing a new one.")
        if not fresh.refresh_token:
            fresh.refresh_token, fresh.refresh_expires_at = tokens.refresh_token, tokens.refresh_expires_at
        fresh.scopes = fresh.scopes or tokens.scopes
        return fresh

    async def revoke(self, account_id: str, tokens: TokenSet) -> None:
        """RFC 7009: revoke the refresh token (the whole grant) or else the access token; best effort."""
        if not self.revoke_url:
            return
        kind = "refresh_token" if tokens.refresh_token else "access_token"
        token = tokens.refresh_token or tokens.access_token
        try:
            await self.client_post(
                self.revoke_url, {"token": token, "token_type_hint": kind}, self._hint_of(tokens)
            )
        except ReconnectRequired:
            return  # the platform says the grant is already gone
