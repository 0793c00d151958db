"""The Shopify provider: authorization code grant with expiring offline tokens, per shop.

Flow (https://shopify.dev/docs/apps/build/authentication-authorization/access-tokens/authorization-code-grant):
`/shopify/{shop}/login` → `https://{shop}/admin/oauth/authorize` → callback with
`code, hmac, host, shop, state, timestamp` → token request (`expiring=1`) at the
shop the flow started with → Admin GraphQL `shop` query. Shopify has no PKCE for
this grant; the signed callback, the state bound to the browser and the shop, and
the client secret on the token request stand in for it.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from linkd import (
    AccessDenied,
    Account,
    Args,
    BadRequest,
    Callback,
    InvalidState,
    Provider,
    ProviderError,
    ReconnectRequired,
    Sandbox,
    TokenSet,
    WebhookActions,
    WebhookRequest,
    WebhookResponse,
)

from .settings import SETTINGS
from .shop import missing_scopes, normalise_shop, parse_scopes, shop_base_url, url_host
from .signing import verify_query
from .tokens import raise_for_refresh_error, token_set
from .webhooks import handle_webhook

log = logging.getLogger("linkd.providers.shopify")
SHOP_QUERY = "{ shop { id name myshopifyDomain email plan { publicDisplayName } } }"
UNINSTALL_MUTATION = "mutation { appUninstall { app { id } userErrors { field message } } }"


class ShopifyProvider(Provider):
    """A Shopify store, connected through the app's OAuth install flow."""

    name = "shopify"
    title = "Shopify"
    description = "Connect a Shopify store (offline access, refreshed before it expires)."
    settings = SETTINGS
    redirect_uri_setting = "SHOPIFY_REDIRECT_URI"
    account_hint = "shop"
    may_start_user = True
    ends_session = False
    pkce = False  # Shopify's authorization code grant has no code_challenge

    @classmethod
    def sandbox(cls, base_url: str) -> Sandbox:
        from providers.shopify_sandbox import make_sandbox

        return make_sandbox(base_url)

    # helpers -----------------------------------------------------------------------
    @property
    def secrets(self) -> list[str]:
        return [
            s
            for s in (
                self.setting("SHOPIFY_API_SECRET"),
                self.context.settings.get("SHOPIFY_API_SECRET_PREVIOUS"),
            )
            if s
        ]

    @property
    def scopes(self) -> tuple[str, ...]:
        return parse_scopes(self.setting("SHOPIFY_SCOPES"))

    def base_url(self, shop: str) -> str:
        return shop_base_url(self.setting("SHOPIFY_BASE_URL"), shop)

    async def _post(self, shop: str, path: str, body: Mapping[str, Any], token: str | None = None) -> Any:
        """POST JSON to the shop's own host, and nowhere else."""
        base = self.base_url(shop)
        headers = {"X-Shopify-Access-Token": token} if token else None
        response = await self.upstream.request(
            "POST", base + path, json_body=dict(body), headers=headers, allowed_hosts=[url_host(base)]
        )
        return response.json()

    def _token_request(self, **fields: str) -> dict[str, str]:
        return {
            "client_id": self.setting("SHOPIFY_API_KEY"),
            "client_secret": self.setting("SHOPIFY_API_SECRET"),
            **fields,
        }

    async def _graphql(self, shop: str, token: str, query: str) -> dict[str, Any]:
        version = self.setting("SHOPIFY_API_VERSION")
        answer = await self._post(shop, f"/admin/api/{version}/graphql.json", {"query": query}, token)
        if not isinstance(answer, dict) or answer.get("errors") or not isinstance(answer.get("data"), dict):
            raise ProviderError("Shopify's Admin API did not answer the query.")
        data: dict[str, Any] = answer["data"]
        return data

    # the connect flow ---------------------------------------------------------------
    def login_context(self, args: Args, account: str | None) -> dict[str, Any]:
        """The shop from `/shopify/{shop}/login` or `?shop=`; Shopify's install request is verified first."""
        if "hmac" in args:
            self.verify_callback(args)
        raw = args.get("shop")
        from_path = normalise_shop(account) if account is not None else None
        from_query = normalise_shop(raw) if raw is not None else None
        if from_path and from_query and from_path != from_query:
            raise BadRequest("The store in the address and the shop parameter differ.")
        shop = from_path or from_query
        if shop is None:
            raise BadRequest("Which store? Add ?shop=your-store.myshopify.com to the address.")
        return {"shop": shop}

    def authorization_url(self, *, state: str, context: Mapping[str, Any], code_challenge: str | None) -> str:
        query = urllib.parse.urlencode(
            {
                "client_id": self.setting("SHOPIFY_API_KEY"),
                "scope": ",".join(self.scopes),
                "redirect_uri": self.context.redirect_uri,
                "state": state,
            }
        )
        return f"{self.base_url(context['shop'])}/admin/oauth/authorize?{query}"

    def verify_callback(self, args: Args) -> None:
        """H2, H3, H4: Shopify's `hmac` over the raw parameters, and a fresh `timestamp`."""
        verify_query(args.pairs, self.secrets, int(self.setting("SHOPIFY_TIMESTAMP_WINDOW")))

    def check_callback(self, args: Args, context: Mapping[str, Any]) -> None:
        """S6: the callback's shop is the one the flow started with."""
        if normalise_shop(args.get("shop")) != context.get("shop"):
            raise InvalidState("This sign-in was started for another store. Please start again.")

    async def complete(self, callback: Callback) -> list[Account]:
        shop = normalise_shop(callback.context.get("shop"))  # the stored shop, never the callback's
        answer = await self._post(
            shop, "/admin/oauth/access_token", self._token_request(code=callback.code, expiring="1")
        )
        tokens = token_set(answer)
        if not isinstance(answer.get("scope"), str):
            raise ProviderError("Shopify did not say which permissions it granted.")
        missing = missing_scopes(self.scopes, tokens.scopes)
        if missing:
            log.warning("shopify grant for %s lacks scopes: %s", shop, ",".join(missing))
            raise AccessDenied(
                "The store granted fewer permissions than linkd asked for (missing: "
                + ", ".join(missing)
                + "). Nothing was connected; check the app's access scopes and try again."
            )
        return [await self._shop_account(shop, tokens)]

    async def _shop_account(self, shop: str, tokens: TokenSet) -> Account:
        data = (await self._graphql(shop, tokens.access_token, SHOP_QUERY)).get("shop")
        if not isinstance(data, dict) or not isinstance(data.get("myshopifyDomain"), str):
            raise ProviderError("Shopify did not describe the store.")
        try:
            domain = normalise_shop(data["myshopifyDomain"])
        except BadRequest:
            raise ProviderError("Shopify described the store with an invalid domain.") from None
        if domain != shop:
            raise ProviderError("Shopify answered for another store than the one being connected.")
        plan = data["plan"] if isinstance(data.get("plan"), dict) else {}
        name = data["name"] if isinstance(data.get("name"), str) and data["name"] else shop
        return Account(
            id=shop,
            name=name,
            kind="shop",
            tokens=tokens,
            profile={
                "shop_id": data.get("id"),
                "domain": domain,
                "email": data.get("email"),
                "plan": plan.get("publicDisplayName") or plan.get("displayName"),
            },
        )

    # after the connect ------------------------------------------------------------------
    def can_refresh(self, tokens: TokenSet) -> bool:
        if not tokens.refresh_token:
            return False
        return tokens.refresh_expires_at is None or tokens.refresh_expires_at > time.time()

    async def refresh(self, account_id: str, tokens: TokenSet) -> TokenSet:
        """Spend the refresh token once; Shopify rotates it, and a refused one means reconnect."""
        if not tokens.refresh_token:
            raise ReconnectRequired()
        shop = normalise_shop(account_id)
        try:
            answer = await self._post(
                shop,
                "/admin/oauth/access_token",
                self._token_request(grant_type="refresh_token", refresh_token=tokens.refresh_token),
            )
        except ProviderError as exc:
            raise_for_refresh_error(exc)
            raise
        return token_set(answer, previous=tokens)

    async def revoke(self, account_id: str, tokens: TokenSet) -> None:
        """Uninstall the app from the shop (`appUninstall`); ProviderError when Shopify did not confirm."""
        try:
            shop = normalise_shop(account_id)
        except BadRequest:
            raise ProviderError("The stored shop is not a valid shop domain.") from None
        try:
            data = await self._graphql(shop, tokens.access_token, UNINSTALL_MUTATION)
        except ProviderError as exc:
            response = exc.data.get("response")
            if response is not None and response.status == 401:
                return  # the token is dead: the app is already uninstalled from this shop
            raise
        result = data.get("appUninstall")
        errors = result.get("userErrors") if isinstance(result, dict) else None
        if not isinstance(result, dict) or errors:
            log.warning("shopify uninstall for %s was not confirmed", shop)
            raise ProviderError("Shopify did not confirm the uninstall.")

    async def webhook(self, request: WebhookRequest, actions: WebhookActions) -> WebhookResponse:
        return await handle_webhook(request, actions, self.secrets)
