"""FacebookProvider: link a person's Facebook Pages, each with its own Page token.

The connect: the login dialog (with PKCE S256, which Meta documents for manually
built login flows), the code exchanged server-side for a short-lived user token,
that exchanged for a long-lived one (`fb_exchange_token`), then `/me` and
`/me/accounts` read with it. The user account is the primary; its Pages are
children, each stored with its own Page token (Page tokens obtained with a
long-lived user token do not expire, so only the user token is refreshed).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any, ClassVar, TypeGuard

from linkd.errors import NotFound, ProviderError, ReconnectRequired
from linkd.provider import (
    Account,
    Callback,
    Provider,
    ProviderContext,
    Sandbox,
    TokenSet,
    WebhookActions,
    WebhookRequest,
    WebhookResponse,
)

from . import signed_request
from .graph import TOKEN_GONE_CODES, Graph
from .settings import GRAPH_VERSION, SETTINGS, scope_list

USER = "user"
PAGE = "page"
MAX_NAME = 200


def _is_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 32


def _name(value: Any, fallback: str) -> str:
    return value[:MAX_NAME] if isinstance(value, str) and value.strip() else fallback


def _expires_at(expires_in: int | None) -> float | None:
    return time.time() + expires_in if expires_in else None


class FacebookProvider(Provider):
    name = "facebook"
    title = "Facebook"
    settings = SETTINGS
    redirect_uri_setting = "FACEBOOK_REDIRECT_URI"
    may_start_user = False
    ends_session = True
    pkce = True
    description = (
        "Links the Facebook Pages you manage, each with its own Page token. Facebook joins an existing "
        "profile: connect a platform that starts a profile first."
    )
    signed_request_max_age: ClassVar[float] = 24 * 3600.0
    webhook_kinds: ClassVar[tuple[str, ...]] = ("deauthorize", "data-deletion")

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self.graph = Graph(
            context.upstream,
            self.setting("FACEBOOK_GRAPH_BASE_URL"),
            self.setting("FACEBOOK_GRAPH_VERSION"),
            self.setting("FACEBOOK_APP_ID"),
            self.setting("FACEBOOK_APP_SECRET"),
        )

    @classmethod
    def sandbox(cls, base_url: str) -> Sandbox | None:
        from ..facebook_sandbox import make_sandbox  # only demo and tests load the fake

        return make_sandbox(base_url, version=GRAPH_VERSION)

    def _secrets(self) -> list[str]:
        previous = self.context.settings.get("FACEBOOK_APP_SECRET_PREVIOUS") or ""
        return [self.setting("FACEBOOK_APP_SECRET"), *(s.strip() for s in previous.split(",") if s.strip())]

    # the connect flow ---------------------------------------------------------------
    def authorization_url(self, *, state: str, context: Mapping[str, Any], code_challenge: str | None) -> str:
        params = {
            "client_id": self.setting("FACEBOOK_APP_ID"),
            "redirect_uri": self.context.redirect_uri,
            "scope": scope_list(self.setting("FACEBOOK_SCOPES")),
            "response_type": "code",
            "state": state,
        }
        if code_challenge:
            params["code_challenge"] = code_challenge
            params["code_challenge_method"] = "S256"
        dialog = self.setting("FACEBOOK_DIALOG_BASE_URL").rstrip("/")
        return f"{dialog}/{self.graph.version}/dialog/oauth?{urllib.parse.urlencode(params)}"

    async def complete(self, callback: Callback) -> list[Account]:
        """Code → short-lived user token → long-lived user token → the user and their Pages."""
        short_token, _ = await self.graph.exchange_code(
            callback.code, self.context.redirect_uri, callback.code_verifier
        )
        user_token, expires_in = await self.graph.long_lived(short_token)
        # the user and their Pages are independent reads: one round trip to Graph instead of two
        me, pages = await asyncio.gather(
            self.graph.get("me", user_token, {"fields": "id,name"}),
            self.graph.get_all("me/accounts", user_token, {"fields": "id,name,category,access_token"}),
        )
        if not isinstance(me, dict) or not _is_id(me.get("id")):
            raise ProviderError()
        user_id = me["id"]
        children: list[Account] = []
        seen: set[str] = set()
        for page in pages:
            page_id, page_token = page.get("id"), page.get("access_token")
            if not _is_id(page_id) or page_id in seen:
                continue
            if not isinstance(page_token, str) or not page_token or len(page_token) > 4096:
                continue  # no Page token: the person cannot act for this Page through the app
            seen.add(page_id)
            category = page.get("category")
            children.append(
                Account(
                    id=page_id,
                    name=_name(page.get("name"), f"Page {page_id}"),
                    kind=PAGE,
                    tokens=TokenSet(access_token=page_token, extra={"kind": PAGE, "user_id": user_id}),
                    profile={"category": category[:MAX_NAME]} if isinstance(category, str) else {},
                )
            )
        user = Account(
            id=user_id,
            name=_name(me.get("name"), "Facebook user"),
            kind=USER,
            tokens=TokenSet(
                access_token=user_token, expires_at=_expires_at(expires_in), extra={"kind": USER}
            ),
            children=children,
        )
        return [user]

    # after the connect ------------------------------------------------------------------
    @staticmethod
    def _kind(tokens: TokenSet) -> str:
        kind = tokens.extra.get("kind")
        return kind if kind in (USER, PAGE) else (USER if tokens.expires_at else PAGE)

    def can_refresh(self, tokens: TokenSet) -> bool:
        """Only the long-lived user token expires (about 60 days); Page tokens do not."""
        return self._kind(tokens) == USER and tokens.expires_at is not None

    async def refresh(self, account_id: str, tokens: TokenSet) -> TokenSet:
        """Extend the long-lived user token with `fb_exchange_token`; a dead token needs a reconnect."""
        if not self.can_refresh(tokens):
            raise ProviderError("This token cannot be refreshed.")
        try:
            token, expires_in = await self.graph.long_lived(tokens.access_token)
        except ProviderError as exc:
            if exc.data.get("graph_code") in TOKEN_GONE_CODES:
                raise ReconnectRequired() from None
            raise
        return TokenSet(
            access_token=token,
            expires_at=_expires_at(expires_in),
            scopes=tokens.scopes,
            extra={**tokens.extra, "kind": USER},
        )

    async def revoke(self, account_id: str, tokens: TokenSet) -> None:
        """`DELETE /{user-id}/permissions` with the user token; a Page has no grant of its own."""
        if self._kind(tokens) != USER or not _is_id(account_id):
            return
        try:
            await self.graph.delete(f"{account_id}/permissions", tokens.access_token)
        except ProviderError as exc:
            if exc.data.get("graph_code") in TOKEN_GONE_CODES:
                return  # the grant is already gone
            raise

    async def webhook(self, request: WebhookRequest, actions: WebhookActions) -> WebhookResponse:
        """Meta's deauthorize and data-deletion callbacks, both a form-encoded `signed_request`."""
        if request.kind not in self.webhook_kinds:
            raise NotFound()
        raw = _signed_request_value(request)
        payload = signed_request.parse(
            raw, self._secrets(), now=time.time(), max_age=self.signed_request_max_age
        )
        user_id = payload["user_id"]
        if request.kind == "deauthorize":
            event_id = "facebook-signed-request:" + hashlib.sha256(raw.encode()).hexdigest()
            if await actions.first_delivery(event_id):
                await actions.remove_accounts([user_id], "deauthorized")
            return WebhookResponse(200, {"status": "ok"})
        # data-deletion: idempotent, and Meta needs a status URL and code on every delivery
        confirmation_code, status_url = await actions.create_deletion_request([user_id])
        return WebhookResponse(200, {"url": status_url, "confirmation_code": confirmation_code})


def _signed_request_value(request: WebhookRequest) -> str:
    """The single `signed_request` of the form body (or, failing that, of the query)."""
    values: list[str] = []
    if request.body:
        try:
            pairs = urllib.parse.parse_qsl(
                request.body.decode("utf-8"), keep_blank_values=True, strict_parsing=True, max_num_fields=32
            )
        except (UnicodeDecodeError, ValueError):
            raise signed_request.MalformedSignedRequest() from None
        values = [value for key, value in pairs if key == "signed_request"]
    if not values:
        values = request.args.getall("signed_request")
    if len(values) != 1:
        raise signed_request.MalformedSignedRequest()
    return values[0]
