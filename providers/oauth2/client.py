"""The platform-facing half of `OAuth2Provider`: its endpoints, client authentication, answers.

`OAuth2Client` declares the class attributes that describe a platform and the helpers
that call its endpoints and read what they answer; `provider.py` builds the connect
flow, refresh and revocation on top of them.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any, ClassVar, cast

from linkd import Account, Provider, ProviderError, ReconnectRequired, TokenSet
from linkd.upstream import UpstreamResponse

from .pointers import resolve_pointer

log = logging.getLogger("linkd.providers.oauth2")

CLIENT_AUTH_METHODS = ("client_secret_post", "client_secret_basic")
SAFE_HINT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,253}[A-Za-z0-9])?")  # never '/', '@', ':', '?', '#'
ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # an OAuth error code is safe to log; anything else is not


class OAuth2Client(Provider):
    """How `OAuth2Provider` talks to a platform, configured by the class attributes below.

    Not a provider on its own: subclass `OAuth2Provider` (its docstring says which
    attributes the smallest subclass sets).
    """

    authorize_url: ClassVar[str] = ""
    token_url: ClassVar[str] = ""
    userinfo_url: ClassVar[str | None] = None  # None: the account is read from the token answer
    revoke_url: ClassVar[str | None] = None  # RFC 7009 revocation endpoint
    scopes: ClassVar[tuple[str, ...]] = ()
    scope_separator: ClassVar[str] = " "
    authorize_params: ClassVar[Mapping[str, str]] = {}
    client_auth: ClassVar[str] = "client_secret_post"  # or "client_secret_basic"
    account_id_pointer: ClassVar[str] = "/sub"  # RFC 6901 pointers into the user info (or token answer)
    account_name_pointer: ClassVar[str | None] = "/name"  # missing or empty: the id
    refresh_enabled: ClassVar[bool] = True
    rotates_refresh_tokens: ClassVar[bool] = False  # each refresh answer must carry a new refresh token
    reconnect_errors: ClassVar[tuple[str, ...]] = ("invalid_grant",)
    hint_pattern: ClassVar[str | None] = None  # what an account hint must fully match (re.fullmatch)
    hint_query: ClassVar[str | None] = None  # query parameter of /{name}/login that may carry the hint
    client_id_setting: ClassVar[str] = ""
    client_secret_setting: ClassVar[str] = ""
    base_url_setting: ClassVar[str] = ""
    definition_file: ClassVar[str | None] = None  # set for providers declared in a TOML file

    # helpers --------------------------------------------------------------------------------------
    @classmethod
    def valid_hint(cls, value: Any) -> bool:
        """The account hint is safe inside a URL and fully matches the declared pattern."""
        return (
            isinstance(value, str)
            and cls.hint_pattern is not None
            and SAFE_HINT.fullmatch(value) is not None
            and ".." not in value
            and re.fullmatch(cls.hint_pattern, value) is not None
        )

    def endpoint(self, url: str, hint: str | None) -> str:
        """`url` re-rooted at the base URL setting when it is set, with the (validated) hint filled in."""
        base = self.context.settings.get(self.base_url_setting, "")
        if base:
            parts = urllib.parse.urlsplit(url)
            url = base.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
        if self.account_hint:
            if not self.valid_hint(hint):
                raise ProviderError("The account this connection belongs to is not valid.")
            url = url.replace("{" + self.account_hint + "}", cast(str, hint))
        return url

    def _hint_of(self, tokens: TokenSet) -> str | None:
        if not self.account_hint:
            return None
        hint = tokens.extra.get("account_hint")
        if not self.valid_hint(hint):
            raise ReconnectRequired()
        return cast(str, hint)

    async def client_post(self, url: str, form: Mapping[str, str], hint: str | None) -> UpstreamResponse:
        """POST a form to the platform with the client's credentials, as `client_auth` says."""
        body = dict(form)
        headers = {}
        client_id = self.setting(self.client_id_setting)
        secret = self.setting(self.client_secret_setting)
        if self.client_auth == "client_secret_basic":  # RFC 6749 §2.3.1: each part form-urlencoded
            pair = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        else:
            body.update(client_id=client_id, client_secret=secret)
        target = self.endpoint(url, hint)
        host = urllib.parse.urlsplit(target).netloc
        return await self.upstream.request("POST", target, form=body, headers=headers, allowed_hosts=[host])

    async def token_request(
        self, form: Mapping[str, str], hint: str | None, *, refreshing: bool = False
    ) -> dict[str, Any]:
        """The token endpoint's JSON answer; an OAuth error in it (any status) is a ProviderError,
        or ReconnectRequired for a refused refresh (`reconnect_errors`)."""
        try:
            data = (await self.client_post(self.token_url, form, hint)).json()
        except ProviderError as exc:
            response = exc.data.get("response")
            data = _json_or_none(response.body) if response is not None else None
            if refreshing and isinstance(data, dict) and data.get("error") in self.reconnect_errors:
                raise ReconnectRequired() from None
            raise
        if not isinstance(data, dict):
            raise ProviderError("The platform's token answer is not a JSON object.")
        if data.get("error") is not None or data.get("ok") is False:  # some platforms answer errors with 200
            if refreshing and data.get("error") in self.reconnect_errors:
                raise ReconnectRequired()
            code = str(data.get("error"))
            log.warning(
                "%s token endpoint refused: %s", self.name, code if ERROR_CODE.fullmatch(code) else "?"
            )
            raise ProviderError()
        return data

    def token_set(self, data: Mapping[str, Any], hint: str | None) -> TokenSet:
        access = data.get("access_token")
        if not isinstance(access, str) or not access or len(access) > 16384:
            raise ProviderError("The platform's token answer has no access token.")
        refresh = data.get("refresh_token")
        now = time.time()
        scope = data.get("scope")
        if isinstance(scope, str):
            scopes = tuple(s for s in re.split(r"[\s,]+", scope) if s)
        elif isinstance(scope, list):
            scopes = tuple(str(s) for s in scope)
        else:
            scopes = ()
        return TokenSet(
            access_token=access,
            refresh_token=refresh if isinstance(refresh, str) and refresh else None,
            expires_at=_seconds_from(now, data.get("expires_in")),
            refresh_expires_at=_seconds_from(now, data.get("refresh_token_expires_in")),
            scopes=scopes,
            token_type=str(data.get("token_type") or "bearer"),
            extra={"account_hint": hint} if hint else {},
        )

    def account(self, source: Any, tokens: TokenSet, hint: str | None) -> Account:
        try:
            raw_id = resolve_pointer(source, self.account_id_pointer)
        except KeyError:
            raise ProviderError("The platform's answer does not say which account this is.") from None
        if (
            isinstance(raw_id, bool)
            or not isinstance(raw_id, str | int)
            or not str(raw_id)
            or len(str(raw_id)) > 255
        ):
            raise ProviderError("The platform's answer has an invalid account id.")
        account_id = str(raw_id)
        name: Any = None
        if self.account_name_pointer is not None:
            try:
                name = resolve_pointer(source, self.account_name_pointer)
            except KeyError:
                name = None
        display = name.strip()[:200] if isinstance(name, str) and name.strip() else account_id
        if hint:  # ids are only unique per hinted host (tenant, store, workspace)
            return Account(f"{hint}:{account_id}", display, tokens, profile={"account_hint": hint})
        return Account(account_id, display, tokens)


def _seconds_from(now: float, value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return now + seconds if 0 < seconds < 10 * 365 * 86400 else None


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None
