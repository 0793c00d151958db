"""The Shopify provider against its sandbox, over real HTTP on loopback.

The sandbox (`providers/shopify_sandbox.py`) signs and checks the way Shopify documents
it, with its own code; the provider is exercised exactly as the core calls it:
login_context → authorization_url → (browser at the sandbox) → verify_callback →
check_callback → complete → refresh → revoke, plus webhooks with a recording
stand-in for the core's WebhookActions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import tornado.web
from tornado.httpclient import AsyncHTTPClient

from linkd import (
    AccessDenied,
    Account,
    Args,
    BadRequest,
    Callback,
    InvalidSignature,
    InvalidState,
    ProviderContext,
    ProviderError,
    ReconnectRequired,
    TokenSet,
    Unauthorized,
    WebhookRequest,
)
from linkd.upstream import Upstream
from providers.shopify import ShopifyProvider, register_providers
from providers.shopify.settings import DEFAULT_API_VERSION, DEFAULT_SCOPES
from providers.shopify.shop import SHOP_HELP
from providers.shopify.signing import query_digest
from providers.shopify.tokens import token_set
from providers.shopify_sandbox import ShopifySandboxState
from tests.servers import ServerThread, free_port

REDIRECT = "http://127.0.0.1:1/shopify/callback"
SHOP = "acme.myshopify.com"
T = TypeVar("T")


@dataclass
class Fake:
    base_url: str
    settings: dict[str, str]
    state: ShopifySandboxState

    def provider(self, upstream: Upstream, **overrides: str) -> ShopifyProvider:
        settings = {**self.settings, **overrides}
        context = ProviderContext(settings, REDIRECT, "http://127.0.0.1:1", upstream)
        return ShopifyProvider(context)

    def run(self, fn: Callable[[ShopifyProvider], Awaitable[T]], timeout: float = 5, **overrides: str) -> T:
        """Run `fn(provider)` on a fresh loop; the Upstream is made on that loop, as the core does."""

        async def main() -> T:
            upstream = Upstream(timeout)
            try:
                return await fn(self.provider(upstream, **overrides))
            finally:
                upstream.close()

        return asyncio.run(main())


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, Any]]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    sandbox = ShopifyProvider.sandbox(base_url)
    server = ServerThread(lambda: tornado.web.Application(sandbox.handlers), port=port).start()
    yield base_url, sandbox
    server.stop()


@pytest.fixture
def fake(served: tuple[str, Any]) -> Fake:
    """The module's sandbox with its controls back to defaults and its counters at zero."""
    base_url, sandbox = served
    state: ShopifySandboxState = sandbox.state
    state.counters.clear()
    state.api_versions.clear()
    for queue in state.failures.values():
        queue.clear()
    state.grant_scopes = None
    state.auto_approve = False
    state.redirect_uri = None
    state.latency = 0.0
    state.code_ttl = 60.0
    state.hang_seconds = 3.0
    state.shop_overrides.clear()
    state.uninstalled.clear()
    settings = {s.name: s.default or "" for s in ShopifyProvider.settings}
    settings.update(sandbox.settings)
    return Fake(base_url, settings, state)


async def fetch(url: str, method: str = "GET", **kw: Any) -> Any:
    client = AsyncHTTPClient(force_instance=True)
    try:
        return await client.fetch(url, method=method, follow_redirects=False, raise_error=False, **kw)
    finally:
        client.close()


def query_args(url: str) -> Args:
    return Args(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True))


async def authorize(
    provider: ShopifyProvider, shop: str = "acme", state: str = "s1", decision: str = "approve"
) -> Args:
    """Start a connect and click the sandbox's consent button; the callback's arguments."""
    context = provider.login_context(Args([]), shop)
    url = provider.authorization_url(state=state, context=context, code_challenge=None)
    response = await fetch(f"{url}&decision={decision}")
    assert response.code == 302
    location = response.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    return query_args(location)


async def connect(provider: ShopifyProvider, shop: str = "acme") -> Account:
    args = await authorize(provider, shop)
    context = provider.login_context(Args([]), shop)
    provider.verify_callback(args)
    provider.check_callback(args, context)
    code = args.get("code")
    assert code
    (account,) = await provider.complete(Callback(args, code, context, REDIRECT, None))
    return account


def callback(state: ShopifySandboxState, **kw: Any) -> list[tuple[str, str]]:
    return state.callback_params(SHOP, "s1", scope=DEFAULT_SCOPES, **kw)


# declaration and settings -----------------------------------------------------------------
def test_declaration_and_registration() -> None:
    registered: list[type] = []
    register_providers(register=registered.append)
    assert registered == [ShopifyProvider]
    assert ShopifyProvider.name == "shopify" and ShopifyProvider.title == "Shopify"
    assert ShopifyProvider.account_hint == "shop"
    assert ShopifyProvider.may_start_user and not ShopifyProvider.ends_session
    assert ShopifyProvider.pkce is False
    assert ShopifyProvider.redirect_uri_setting == "SHOPIFY_REDIRECT_URI"
    names = {s.name: s for s in ShopifyProvider.settings}
    assert names["SHOPIFY_API_KEY"].required and names["SHOPIFY_API_SECRET"].secret
    assert names["SHOPIFY_API_SECRET_PREVIOUS"].secret and not names["SHOPIFY_API_SECRET_PREVIOUS"].required
    assert names["SHOPIFY_SCOPES"].default == DEFAULT_SCOPES
    assert names["SHOPIFY_API_VERSION"].default == DEFAULT_API_VERSION == "2026-10"
    assert names["SHOPIFY_BASE_URL"].default == "https://{shop}"
    assert names["SHOPIFY_TIMESTAMP_WINDOW"].default == "90"


def test_sandbox_settings_are_complete(fake: Fake) -> None:
    assert ShopifyProvider.setting_problems(fake.settings) == []
    assert fake.settings["SHOPIFY_BASE_URL"] == fake.base_url + "/{shop}"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SHOPIFY_API_KEY", "your-api-key"),
        ("SHOPIFY_API_KEY", "your_shopify_api_key"),
        ("SHOPIFY_API_SECRET", "changeme"),
        ("SHOPIFY_API_SECRET", "replace_with_your_secret"),
        ("SHOPIFY_API_SECRET", "your_shopify_api_secret"),
        ("SHOPIFY_API_SECRET", "<secret>"),
        ("SHOPIFY_API_SECRET", "has space"),
        ("SHOPIFY_API_SECRET_PREVIOUS", "changeme"),
        ("SHOPIFY_BASE_URL", "https://shop.example"),
        ("SHOPIFY_BASE_URL", "http://shops.example/{shop}"),
        ("SHOPIFY_BASE_URL", "https://{shop}?x=1"),
        ("SHOPIFY_BASE_URL", "ftp://{shop}"),
        ("SHOPIFY_API_VERSION", "2024-13"),
        ("SHOPIFY_API_VERSION", "latest"),
        ("SHOPIFY_TIMESTAMP_WINDOW", "0"),
        ("SHOPIFY_TIMESTAMP_WINDOW", "ninety"),
        ("SHOPIFY_SCOPES", "read products"),
        ("SHOPIFY_SCOPES", ","),
        ("SHOPIFY_REDIRECT_URI", "http://linkd.example.com/shopify/callback"),
    ],
)
def test_bad_settings_are_reported_without_their_value(fake: Fake, name: str, value: str) -> None:
    problems = ShopifyProvider.setting_problems({**fake.settings, name: value})
    assert len(problems) == 1 and problems[0].startswith(name)
    assert len(value) < 4 or value not in problems[0]


def test_missing_credentials_are_reported(fake: Fake) -> None:
    settings = {k: v for k, v in fake.settings.items() if k not in ("SHOPIFY_API_KEY", "SHOPIFY_API_SECRET")}
    assert ShopifyProvider.setting_problems(settings) == [
        "SHOPIFY_API_KEY is not set",
        "SHOPIFY_API_SECRET is not set",
    ]


@pytest.mark.parametrize(
    "value",
    ["https://{shop}", "http://127.0.0.1:8080/_sandbox/shopify/{shop}", "http://localhost/{shop}/"],
)
def test_acceptable_base_urls(fake: Fake, value: str) -> None:
    assert ShopifyProvider.setting_problems({**fake.settings, "SHOPIFY_BASE_URL": value}) == []


# login (H1) -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "shop"),
    [
        ("acme", SHOP),
        ("ACME", SHOP),
        ("Acme.MyShopify.com", SHOP),
        ("my-store-2", "my-store-2.myshopify.com"),
        ("0shop.myshopify.com", "0shop.myshopify.com"),
    ],
)
def test_login_normalises_the_shop(fake: Fake, raw: str, shop: str) -> None:
    async def check(provider: ShopifyProvider) -> None:
        assert provider.login_context(Args([]), raw) == {"shop": shop}
        assert provider.login_context(Args([("shop", raw)]), None) == {"shop": shop}
        assert provider.login_context(Args([("shop", shop)]), raw) == {"shop": shop}

    fake.run(check)


HOSTILE_SHOPS = [
    "evil.com/x.myshopify.com",
    "good.myshopify.com.evil.com",
    "good.myshopify.com@evil.com",
    "evil.com@good.myshopify.com",
    "good.myshopify.com:443",
    "good.myshopify.com:8080",
    "127.0.0.1",
    "169.254.169.254",
    "[::1]",
    "::1",
    "good.myshopify.com.",
    "good.myshopify.com..",
    ".myshopify.com",
    "-good.myshopify.com",
    "good..myshopify.com",
    "ｇｏｏｄ.myshopify.com",
    "gööd.myshopify.com",
    "good.myshopify.com\r\nX-Injected: 1",
    "good\x00.myshopify.com",
    "good.myshopify.com\n",
    "good.myshopify.com\t",
    "\u202egood.myshopify.com",
    "a" * 64 + ".myshopify.com",
    "a" * 300,
    "https://good.myshopify.com",
    "//evil.com",
    "good.myshopify.com/admin",
    "good.myshopify.com?x=1",
    "good.myshopify.com#x",
    "good myshopify.com",
    "good%2emyshopify.com",
    "good.myshopify.co",
    "good.shopify.com",
    "evil.com",
    "good_shop.myshopify.com",
    "good.myshopify.com\\@evil.com",
    "<script>alert(1)</script>",
]


@pytest.mark.parametrize("raw", HOSTILE_SHOPS)
def test_hostile_shops_are_refused_before_any_request(fake: Fake, raw: str) -> None:
    async def check(provider: ShopifyProvider) -> None:
        for args, account in ((Args([("shop", raw)]), None), (Args([]), raw)):
            with pytest.raises(BadRequest) as caught:
                provider.login_context(args, account)
            assert caught.value.status == 400
            assert caught.value.message == "That store address is not valid. " + SHOP_HELP  # never echoed

    fake.run(check)
    assert fake.state.requests() == 0


def test_login_needs_exactly_one_shop(fake: Fake) -> None:
    async def check(provider: ShopifyProvider) -> None:
        with pytest.raises(BadRequest):
            provider.login_context(Args([]), None)
        with pytest.raises(BadRequest):
            provider.login_context(Args([("shop", "other")]), "acme")
        with pytest.raises(BadRequest):
            provider.login_context(Args([("shop", "acme"), ("shop", "acme")]), None)

    fake.run(check)


def test_install_request_from_the_admin_is_verified(fake: Fake) -> None:
    install = fake.state.signed_params({"shop": SHOP, "host": "YWRtaW4"})

    async def check(provider: ShopifyProvider) -> None:
        assert provider.login_context(Args(install), None) == {"shop": SHOP}
        tampered = [(k, "other.myshopify.com" if k == "shop" else v) for k, v in install]
        with pytest.raises(InvalidSignature):
            provider.login_context(Args(tampered), None)
        stale = fake.state.signed_params({"shop": SHOP}, timestamp=int(time.time()) - 3600)
        with pytest.raises(InvalidSignature):
            provider.login_context(Args(stale), None)

    fake.run(check)


def test_authorization_url(fake: Fake) -> None:
    async def check(provider: ShopifyProvider) -> str:
        context = provider.login_context(Args([]), "acme")
        return provider.authorization_url(state="st-1", context=context, code_challenge=None)

    url = fake.run(check)
    split = urllib.parse.urlsplit(url)
    assert f"{split.scheme}://{split.netloc}" == fake.base_url
    assert split.path == f"/{SHOP}/admin/oauth/authorize"
    assert urllib.parse.parse_qsl(split.query) == [
        ("client_id", fake.settings["SHOPIFY_API_KEY"]),
        ("scope", DEFAULT_SCOPES),
        ("redirect_uri", REDIRECT),
        ("state", "st-1"),
    ]
    production = {**fake.settings, "SHOPIFY_BASE_URL": "https://{shop}"}
    provider = ShopifyProvider(ProviderContext(production, REDIRECT, "", None))  # type: ignore[arg-type]
    assert provider.authorization_url(state="x", context={"shop": SHOP}, code_challenge=None).startswith(
        f"https://{SHOP}/admin/oauth/authorize?client_id="
    )


# the whole connect, refresh, revoke ---------------------------------------------------------
def test_install_callback_exchange_refresh_rotation_and_revoke(fake: Fake) -> None:
    async def flow(provider: ShopifyProvider) -> None:
        before = time.time()
        account = await connect(provider)
        assert (account.id, account.name, account.kind) == (SHOP, "Acme", "shop")
        assert account.profile["domain"] == SHOP
        assert account.profile["shop_id"].startswith("gid://shopify/Shop/")
        assert account.profile["email"] == "owner@acme.example"
        assert account.profile["plan"] == "Development"
        tokens = account.tokens
        assert tokens is not None and tokens.refresh_token
        assert tokens.expires_at is not None and before + 3590 < tokens.expires_at < time.time() + 3600
        assert tokens.refresh_expires_at is not None and tokens.refresh_expires_at > time.time() + 86400
        assert set(tokens.scopes) == set(DEFAULT_SCOPES.split(","))
        assert fake.state.api_versions == {DEFAULT_API_VERSION: 1}
        assert provider.can_refresh(tokens)

        fresh = await provider.refresh(SHOP, tokens)
        assert fresh.access_token != tokens.access_token
        assert fresh.refresh_token and fresh.refresh_token != tokens.refresh_token
        assert fake.state.live_tokens(SHOP, "refresh") == [fresh.refresh_token]
        with pytest.raises(ReconnectRequired):  # the old refresh token was spent
            await provider.refresh(SHOP, tokens)

        await provider.revoke(SHOP, fresh)
        assert fake.state.uninstalled == [SHOP]
        assert fake.state.live_tokens(SHOP) == [] and fake.state.live_tokens(SHOP, "refresh") == []
        with pytest.raises(ReconnectRequired):
            await provider.refresh(SHOP, fresh)

    fake.run(flow)
    assert fake.state.requests("access_token") == 4


def test_code_is_single_use_and_a_replay_revokes_its_tokens(fake: Fake) -> None:
    async def flow(provider: ShopifyProvider) -> None:
        args = await authorize(provider)
        context = {"shop": SHOP}
        code = args.get("code") or ""
        (account,) = await provider.complete(Callback(args, code, context, REDIRECT, None))
        with pytest.raises(ProviderError):
            await provider.complete(Callback(args, code, context, REDIRECT, None))
        assert account.tokens is not None
        assert account.tokens.access_token not in fake.state.live_tokens(SHOP)

    fake.run(flow)


def test_expired_code_is_refused(fake: Fake) -> None:
    fake.state.code_ttl = -1

    async def flow(provider: ShopifyProvider) -> None:
        args = await authorize(provider)
        with pytest.raises(ProviderError):
            await provider.complete(Callback(args, args.get("code") or "", {"shop": SHOP}, REDIRECT, None))

    fake.run(flow)
    assert fake.state.requests("graphql") == 0


def test_token_url_comes_from_the_stored_shop(fake: Fake) -> None:
    """A code for another shop, presented for a flow started with acme, goes to acme and fails."""

    async def flow(provider: ShopifyProvider) -> None:
        args = Args(fake.state.callback_params("other.myshopify.com", "s1", scope=DEFAULT_SCOPES))
        provider.verify_callback(args)
        with pytest.raises(InvalidState):
            provider.check_callback(args, {"shop": SHOP})
        with pytest.raises(ProviderError):
            await provider.complete(Callback(args, args.get("code") or "", {"shop": SHOP}, REDIRECT, None))

    fake.run(flow)


def test_wrong_client_secret_is_refused_by_the_sandbox(fake: Fake) -> None:
    async def flow(provider: ShopifyProvider) -> None:
        args = await authorize(provider)
        with pytest.raises(ProviderError):
            await provider.complete(Callback(args, args.get("code") or "", {"shop": SHOP}, REDIRECT, None))

    fake.run(flow, SHOPIFY_API_SECRET="shpss_" + "0" * 32)
    assert fake.state.requests("graphql") == 0


def test_cancel_comes_back_signed_with_an_error(fake: Fake) -> None:
    async def flow(provider: ShopifyProvider) -> None:
        args = await authorize(provider, decision="cancel")
        provider.verify_callback(args)
        assert args.get("error") == "access_denied" and args.get("code") is None
        assert args.get("state") == "s1"

    fake.run(flow)


# H2, H3, H4: the callback's signature ---------------------------------------------------------
def verify(fake: Fake, pairs: Sequence[tuple[str, str]], **overrides: str) -> None:
    async def check(provider: ShopifyProvider) -> None:
        provider.verify_callback(Args(pairs))

    fake.run(check, 5, **overrides)


def test_a_genuine_callback_verifies_in_any_order(fake: Fake) -> None:
    pairs = callback(fake.state)
    verify(fake, pairs)
    verify(fake, list(reversed(pairs)))
    shuffled = list(pairs)
    random.Random(7).shuffle(shuffled)
    verify(fake, shuffled)


@pytest.mark.parametrize("key", ["code", "host", "shop", "state", "timestamp"])
def test_tampering_with_any_parameter_fails(fake: Fake, key: str) -> None:
    pairs = callback(fake.state)
    tampered = [(k, (str(int(v) - 1) if k == "timestamp" else v + "x") if k == key else v) for k, v in pairs]
    with pytest.raises(InvalidSignature):
        verify(fake, tampered)
    dropped = [(k, v) for k, v in pairs if k != key]
    with pytest.raises(InvalidSignature):
        verify(fake, dropped)


def flip(digest: str) -> str:
    return digest[:-1] + ("0" if digest[-1] != "0" else "1")


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda p: [*p, ("extra", "1")], id="extra-parameter"),
        pytest.param(lambda p: [*p, ("state", dict(p)["state"])], id="repeated-parameter"),
        pytest.param(lambda p: [*p, ("hmac", dict(p)["hmac"])], id="repeated-hmac"),
        pytest.param(lambda p: [(k, v.upper() if k == "hmac" else v) for k, v in p], id="uppercase-hex"),
        pytest.param(lambda p: [(k, v[:-1] if k == "hmac" else v) for k, v in p], id="short-digest"),
        pytest.param(lambda p: [(k, v + "0" if k == "hmac" else v) for k, v in p], id="long-digest"),
        pytest.param(lambda p: [(k, flip(v) if k == "hmac" else v) for k, v in p], id="one-hex-digit"),
        pytest.param(lambda p: [(k, "" if k == "hmac" else v) for k, v in p], id="empty-hmac"),
        pytest.param(lambda p: [(k, v) for k, v in p if k != "hmac"], id="missing-hmac"),
        pytest.param(lambda p: [("HMAC" if k == "hmac" else k, v) for k, v in p], id="renamed-hmac"),
    ],
)
def test_signature_shape_and_parameter_set_are_strict(
    fake: Fake, mutate: Callable[[list[tuple[str, str]]], list[tuple[str, str]]]
) -> None:
    with pytest.raises(InvalidSignature):
        verify(fake, mutate(callback(fake.state)))


def test_signature_with_another_secret_fails(fake: Fake) -> None:
    with pytest.raises(InvalidSignature):
        verify(fake, callback(fake.state, secret="shpss_not-the-app-secret"))


def test_previous_secret_still_verifies_during_rotation(fake: Fake) -> None:
    old = "shpss_the-secret-before-rotation"
    pairs = callback(fake.state, secret=old)
    verify(fake, pairs, SHOPIFY_API_SECRET_PREVIOUS=old)
    verify(fake, callback(fake.state), SHOPIFY_API_SECRET_PREVIOUS=old)  # the current one too
    with pytest.raises(InvalidSignature):
        verify(fake, pairs)


def test_delimiters_in_values_are_escaped_as_shopify_does(fake: Fake) -> None:
    odd = {"code": "a&b=c%d", "shop": SHOP, "state": "x%26y", "we=ird&key%": "v"}
    verify(fake, fake.state.signed_params(odd))
    # "a=1&b=2" inside one value must not sign the same as two parameters
    assert query_digest("k", [("a", "1&b=2")]) != query_digest("k", [("a", "1"), ("b", "2")])


def test_known_answer_vectors_from_shopify_docs() -> None:
    pairs = [
        ("code", "0907a61c0c8d55e99db179b68161bc00"),
        ("shop", "some-shop.myshopify.com"),
        ("timestamp", "1337178173"),
    ]
    assert query_digest("hush", pairs) == "4712bf92ffc2917d15a2f5a273e39f0116667419aa4b6ac0b3baaf26fa3c4d20"
    pairs.append(("state", "0.6784241404160823"))
    assert query_digest("hush", pairs) == "700e2dadb827fcc8609e9d5ce208b2e9cdaab9df07390d2cbca10d7c328fc4bf"


@pytest.mark.parametrize("offset", [-95, 95, -3600, 86400])
def test_stale_or_future_timestamps_fail(fake: Fake, offset: int) -> None:
    with pytest.raises(InvalidSignature):
        verify(fake, callback(fake.state, timestamp=int(time.time()) + offset))


def test_timestamp_window_is_configurable_and_required(fake: Fake) -> None:
    recent = callback(fake.state, timestamp=int(time.time()) - 60)
    verify(fake, recent)
    with pytest.raises(InvalidSignature):
        verify(fake, recent, SHOPIFY_TIMESTAMP_WINDOW="10")
    for stamp in ("", "soon", "-5", "1e9"):
        with pytest.raises(InvalidSignature):
            verify(fake, fake.state.signed_params({"shop": SHOP, "timestamp": stamp}))
    unstamped = [("shop", SHOP)]
    with pytest.raises(InvalidSignature):
        verify(fake, [("hmac", fake.state.sign(unstamped)), *unstamped])


# S6, H5 -------------------------------------------------------------------------------------------
def test_callback_shop_must_be_the_flow_shop(fake: Fake) -> None:
    async def check(provider: ShopifyProvider) -> None:
        provider.check_callback(Args([("shop", "ACME.myshopify.com")]), {"shop": SHOP})
        with pytest.raises(InvalidState):
            provider.check_callback(Args([("shop", "other.myshopify.com")]), {"shop": SHOP})
        for bad in ([("shop", "acme.myshopify.com.evil.com")], [], [("shop", SHOP), ("shop", SHOP)]):
            with pytest.raises(BadRequest):
                provider.check_callback(Args(bad), {"shop": SHOP})

    fake.run(check)


def test_scope_shortfall_is_refused_before_any_api_call(fake: Fake) -> None:
    fake.state.grant_scopes = "read_products,read_inventory"

    async def flow(provider: ShopifyProvider) -> None:
        with pytest.raises(AccessDenied) as caught:
            await connect(provider)
        assert "read_discounts" in caught.value.message and "read_locations" in caught.value.message

    fake.run(flow)
    assert fake.state.requests("graphql") == 0


def test_write_scopes_cover_their_read_scopes(fake: Fake) -> None:
    fake.state.grant_scopes = "write_products,write_inventory"

    async def flow(provider: ShopifyProvider) -> None:
        account = await connect(provider)
        assert account.tokens is not None
        assert account.tokens.scopes == ("write_products", "write_inventory")

    fake.run(flow, SHOPIFY_SCOPES="read_products,read_inventory")


# upstream trouble ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("endpoint", "mode"),
    [(e, m) for e in ("access_token", "graphql") for m in ("500", "garbage", "redirect")],
)
def test_upstream_failures_during_connect_are_provider_errors(fake: Fake, endpoint: str, mode: str) -> None:
    fake.state.fail_next(endpoint, mode)

    async def flow(provider: ShopifyProvider) -> None:
        with pytest.raises(ProviderError):
            await connect(provider)

    fake.run(flow)


def test_upstream_timeout_is_a_provider_error(fake: Fake) -> None:
    fake.state.hang_seconds = 1.5
    fake.state.fail_next("access_token", "hang")

    async def flow(provider: ShopifyProvider) -> None:
        started = time.monotonic()
        with pytest.raises(ProviderError):
            await connect(provider)
        assert time.monotonic() - started < 1.4

    fake.run(flow, timeout=0.5)


def test_shop_answer_for_another_domain_is_refused(fake: Fake) -> None:
    fake.state.shop_overrides[SHOP] = {"myshopifyDomain": "other.myshopify.com"}

    async def flow(provider: ShopifyProvider) -> None:
        with pytest.raises(ProviderError):
            await connect(provider)

    fake.run(flow)


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("invalid_grant", ReconnectRequired),
        ("500", ProviderError),
        ("garbage", ProviderError),
        ("redirect", ProviderError),
    ],
)
def test_refresh_failures(fake: Fake, mode: str, error: type[Exception]) -> None:
    async def flow(provider: ShopifyProvider) -> None:
        account = await connect(provider)
        assert account.tokens is not None
        fake.state.fail_next("access_token", mode)
        with pytest.raises(error):
            await provider.refresh(SHOP, account.tokens)
        if error is ProviderError:  # a passing failure does not spend the grant
            assert (await provider.refresh(SHOP, account.tokens)).access_token

    fake.run(flow)


def test_refresh_timeout_is_a_provider_error(fake: Fake) -> None:
    async def flow(provider: ShopifyProvider) -> None:
        account = await connect(provider)
        assert account.tokens is not None
        fake.state.hang_seconds = 1.5
        fake.state.fail_next("access_token", "hang")
        with pytest.raises(ProviderError):
            await provider.refresh(SHOP, account.tokens)

    fake.run(flow, timeout=0.5)


def test_revoke_of_a_dead_token_counts_as_done_and_a_failure_is_raised(
    fake: Fake, caplog: pytest.LogCaptureFixture
) -> None:
    async def dead(provider: ShopifyProvider) -> None:
        await provider.revoke(SHOP, TokenSet(access_token="shpat_unknown"))  # 401: already uninstalled

    async def failing(provider: ShopifyProvider) -> None:
        with pytest.raises(ProviderError):
            await provider.revoke(SHOP, TokenSet(access_token="shpat_unknown"))

    with caplog.at_level(logging.WARNING):
        fake.run(dead)
        fake.state.fail_next("graphql", "500")
        fake.run(failing)
    assert fake.state.requests("graphql") == 2 and fake.state.uninstalled == []
    assert "shpat_unknown" not in caplog.text


def test_token_answers_are_read_defensively() -> None:
    now = 1_000_000.0
    legacy = token_set({"access_token": "a", "scope": "read_products"}, now=now)
    assert legacy.expires_at is None and legacy.refresh_token is None and legacy.scopes == ("read_products",)
    for odd in ("soon", -5, True, None, 10**12):
        assert token_set({"access_token": "a", "expires_in": odd}, now=now).expires_at is None
    assert token_set({"access_token": "a", "expires_in": "3599"}, now=now).expires_at == now + 3599
    previous = TokenSet("old", refresh_token="r1", refresh_expires_at=now + 50, scopes=("read_products",))
    kept = token_set({"access_token": "b", "expires_in": 3599}, previous=previous, now=now)
    assert (kept.refresh_token, kept.refresh_expires_at, kept.scopes) == ("r1", now + 50, ("read_products",))
    bad: Any
    for bad in (None, [], "x", {}, {"access_token": ""}, {"access_token": 5}):
        with pytest.raises(ProviderError):
            token_set(bad)


def test_can_refresh(fake: Fake) -> None:
    async def check(provider: ShopifyProvider) -> None:
        assert not provider.can_refresh(TokenSet("a"))
        assert provider.can_refresh(TokenSet("a", refresh_token="r"))
        assert provider.can_refresh(TokenSet("a", refresh_token="r", refresh_expires_at=time.time() + 60))
        assert not provider.can_refresh(TokenSet("a", refresh_token="r", refresh_expires_at=time.time() - 1))
        with pytest.raises(ReconnectRequired):
            await provider.refresh(SHOP, TokenSet("a"))

    fake.run(check)
    assert fake.state.requests() == 0


# webhooks (H6) ----------------------------------------------------------------------------------
class RecordingActions:
    """Stands in for the core's WebhookActions: remembers event ids and what was removed."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.deliveries: list[str] = []
        self.removed: list[list[str]] = []

    async def first_delivery(self, event_id: str) -> bool:
        self.deliveries.append(event_id)
        first = event_id not in self.seen
        self.seen.add(event_id)
        return first

    async def remove_accounts(self, account_ids: Sequence[str], reason: str = "uninstalled") -> int:
        self.removed.append(list(account_ids))
        return len(account_ids)

    async def create_deletion_request(self, account_ids: Sequence[str]) -> tuple[str, str]:
        raise AssertionError("Shopify never asks for a deletion request")


def deliver(
    fake: Fake,
    headers: dict[str, str],
    body: bytes,
    actions: RecordingActions | None = None,
    **overrides: str,
) -> tuple[int, Any, RecordingActions]:
    actions = actions or RecordingActions()

    async def send(provider: ShopifyProvider) -> Any:
        return await provider.webhook(WebhookRequest(None, headers, body, Args([])), actions)

    response = fake.run(send, 5, **overrides)
    return response.status, response.body, actions


@pytest.mark.parametrize("topic", ["app/uninstalled", "shop/redact"])
def test_uninstall_and_shop_redact_remove_the_shop(fake: Fake, topic: str) -> None:
    status, body, actions = deliver(fake, *fake.state.signed_webhook(topic, SHOP))
    assert status == 200 and body == {"status": "removed"}
    assert actions.removed == [[SHOP]] and len(actions.deliveries) == 1


@pytest.mark.parametrize("topic", ["customers/data_request", "customers/redact"])
def test_customer_requests_are_acknowledged(fake: Fake, topic: str) -> None:
    status, body, actions = deliver(fake, *fake.state.signed_webhook(topic, SHOP))
    assert status == 200 and body == {"status": "acknowledged"} and actions.removed == []


def test_unknown_topic_is_ignored_but_logged(fake: Fake, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "linkd.providers.shopify"):
        status, body, actions = deliver(fake, *fake.state.signed_webhook("orders/create", SHOP, b'{"id": 1}'))
    assert status == 200 and body == {"status": "ignored"} and actions.removed == []
    assert "orders/create" in caplog.text


def test_webhook_signature_is_required(fake: Fake) -> None:
    headers, body = fake.state.signed_webhook("app/uninstalled", SHOP)
    cases = [
        ({k: v for k, v in headers.items() if k != "X-Shopify-Hmac-Sha256"}, body),
        ({**headers, "X-Shopify-Hmac-Sha256": ""}, body),
        ({**headers, "X-Shopify-Hmac-Sha256": "not base64 ✗"}, body),
        (headers, body + b" "),
        (headers, body.replace(b"acme", b"acmf")),
        fake.state.signed_webhook("app/uninstalled", SHOP, secret="shpss_another-apps-secret"),
    ]
    for case_headers, case_body in cases:
        actions = RecordingActions()
        with pytest.raises(Unauthorized) as caught:
            deliver(fake, case_headers, case_body, actions)
        assert caught.value.status == 401
        assert actions.deliveries == [] and actions.removed == []


def test_webhook_signed_with_the_previous_secret_verifies(fake: Fake) -> None:
    old = "shpss_the-secret-before-rotation"
    headers, body = fake.state.signed_webhook("app/uninstalled", SHOP, secret=old)
    status, _, actions = deliver(fake, headers, body, SHOPIFY_API_SECRET_PREVIOUS=old)
    assert status == 200 and actions.removed == [[SHOP]]
    with pytest.raises(Unauthorized):
        deliver(fake, headers, body)


def test_duplicate_deliveries_act_once(fake: Fake) -> None:
    headers, body = fake.state.signed_webhook("app/uninstalled", SHOP)
    actions = RecordingActions()
    assert deliver(fake, headers, body, actions)[:2] == (200, {"status": "removed"})
    retry = {**headers, "X-Shopify-Webhook-Id": "another-delivery"}
    assert deliver(fake, retry, body, actions)[:2] == (200, {"status": "duplicate"})
    assert actions.removed == [[SHOP]]
    assert actions.deliveries == [headers["X-Shopify-Event-Id"]] * 2


def test_webhook_id_is_the_fallback_event_id(fake: Fake) -> None:
    headers, body = fake.state.signed_webhook("shop/redact", SHOP)
    del headers["X-Shopify-Event-Id"]
    actions = RecordingActions()
    deliver(fake, headers, body, actions)
    deliver(fake, headers, body, actions)
    assert actions.deliveries == [headers["X-Shopify-Webhook-Id"]] * 2 and actions.removed == [[SHOP]]


def test_webhook_headers_are_case_insensitive(fake: Fake) -> None:
    headers, body = fake.state.signed_webhook("app/uninstalled", SHOP)
    status, _, actions = deliver(fake, {k.lower(): v for k, v in headers.items()}, body)
    assert status == 200 and actions.removed == [[SHOP]]


def test_unsigned_headers_cannot_redirect_a_signed_body(fake: Fake) -> None:
    """Topic and shop headers are not signed: a genuine body replayed under other ones removes nothing."""
    state = fake.state
    cases = [
        # a customer request's body (it names the shop) replayed as shop/redact or app/uninstalled
        state.signed_webhook("customers/redact", SHOP),
        state.signed_webhook("customers/data_request", SHOP),
        # another shop's genuine uninstall replayed for acme
        state.signed_webhook("app/uninstalled", "other.myshopify.com"),
        state.signed_webhook("shop/redact", "other.myshopify.com"),
        # bodies that name no shop at all
        state.signed_webhook("app/uninstalled", SHOP, b"{}"),
        state.signed_webhook("app/uninstalled", SHOP, b"not json"),
        state.signed_webhook("shop/redact", SHOP, b"[1, 2]"),
    ]
    for topic in ("app/uninstalled", "shop/redact"):
        for headers, body in cases:
            replayed = {**headers, "X-Shopify-Topic": topic, "X-Shopify-Shop-Domain": SHOP}
            actions = RecordingActions()
            with pytest.raises(BadRequest):
                deliver(fake, replayed, body, actions)
            assert actions.removed == [] and actions.deliveries == []
    for genuine, replayed_as in (("app/uninstalled", "shop/redact"), ("shop/redact", "app/uninstalled")):
        headers, body = state.signed_webhook(genuine, SHOP)
        with pytest.raises(BadRequest):
            deliver(fake, {**headers, "X-Shopify-Topic": replayed_as}, body)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Shopify-Shop-Domain", "evil.com"),
        ("X-Shopify-Shop-Domain", "acme.myshopify.com.evil.com"),
        ("X-Shopify-Topic", ""),
        ("X-Shopify-Topic", "app/uninstalled\r\nx"),
        ("X-Shopify-Event-Id", "\x00" * 3),
        ("X-Shopify-Event-Id", "x" * 500),
    ],
)
def test_bad_webhook_headers_are_400_and_recorded_nowhere(fake: Fake, name: str, value: str) -> None:
    headers, body = fake.state.signed_webhook("app/uninstalled", SHOP)
    actions = RecordingActions()
    with pytest.raises(BadRequest):
        deliver(fake, {**headers, name: value}, body, actions)
    assert actions.removed == [] and actions.deliveries == []


# the sandbox itself: strict like Shopify, usable by the peer app ---------------------------------
def test_sandbox_authorize_is_strict(fake: Fake) -> None:
    key = fake.settings["SHOPIFY_API_KEY"]
    good = {"client_id": key, "scope": "read_products", "redirect_uri": REDIRECT, "state": "s"}

    async def check() -> None:
        base = f"{fake.base_url}/{SHOP}/admin/oauth/authorize?"
        for bad in (
            {**good, "client_id": "nope"},
            {**good, "redirect_uri": "https://evil.example/cb"},
            {**good, "scope": ""},
            {**good, "scope": "read products"},
        ):
            response = await fetch(base + urllib.parse.urlencode({**bad, "decision": "approve"}))
            assert response.code == 400 and "Location" not in response.headers
        fake.state.redirect_uri = REDIRECT + "/"
        response = await fetch(base + urllib.parse.urlencode({**good, "decision": "approve"}))
        assert response.code == 400
        fake.state.redirect_uri = REDIRECT
        response = await fetch(base + urllib.parse.urlencode({**good, "sandbox_auto": "1"}))
        assert response.code == 302 and response.headers["Location"].startswith(REDIRECT + "?")
        fake.state.auto_approve = True
        response = await fetch(base + urllib.parse.urlencode(good))
        assert response.code == 302
        assert (
            await fetch(f"{fake.base_url}/evil.com/admin/oauth/authorize?" + urllib.parse.urlencode(good))
        ).code == 404

    asyncio.run(check())
    assert fake.state.requests("authorize") == 8


def test_sandbox_consent_page_escapes_everything(fake: Fake) -> None:
    params = {
        "client_id": fake.settings["SHOPIFY_API_KEY"],
        "scope": "read_products,write_orders",
        "redirect_uri": REDIRECT,
        "state": '"><script>alert(1)</script>',
    }

    async def check() -> Any:
        return await fetch(f"{fake.base_url}/{SHOP}/admin/oauth/authorize?" + urllib.parse.urlencode(params))

    response = asyncio.run(check())
    page = response.body.decode()
    assert response.code == 200 and "<script>" not in page and "&lt;script&gt;" in page
    assert "Install app" in page and "Cancel" in page and "Acme" in page and SHOP in page
    assert "View and edit orders" in page and "View products" in page
    assert "src=" not in page and "<link" not in page and "url(" not in page  # nothing third-party
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_sandbox_serves_the_peer_app_calls(fake: Fake) -> None:
    """The seed app posts JSON without `expiring`, then asks for `shop { id name myshopifyDomain }`."""
    state = fake.state

    async def check() -> None:
        code = state.issue_code(SHOP, "read_products")
        payload = {"client_id": state.api_key, "client_secret": state.api_secret, "code": code}
        response = await fetch(
            f"{fake.base_url}/{SHOP}/admin/oauth/access_token",
            "POST",
            body=json.dumps(payload),
            headers={"Content-Type": "application/json"},
        )
        token = json.loads(response.body)
        assert response.code == 200 and set(token) == {"access_token", "scope"}
        response = await fetch(
            f"{fake.base_url}/{SHOP}/admin/api/2024-07/graphql.json",
            "POST",
            body=json.dumps({"query": "{ shop { id name myshopifyDomain } }"}),
            headers={"X-Shopify-Access-Token": token["access_token"], "Content-Type": "application/json"},
        )
        assert response.code == 200
        assert set(json.loads(response.body)["data"]["shop"]) == {"id", "name", "myshopifyDomain"}
        form = urllib.parse.urlencode(
            {**payload, "code": state.issue_code(SHOP, "read_products"), "expiring": "1"}
        )
        response = await fetch(f"{fake.base_url}/{SHOP}/admin/oauth/access_token", "POST", body=form)
        assert response.code == 200 and "refresh_token" in json.loads(response.body)
        unauthorised = await fetch(
            f"{fake.base_url}/{SHOP}/admin/api/2024-07/graphql.json",
            "POST",
            body=json.dumps({"query": "{ shop { id } }"}),
        )
        assert unauthorised.code == 401

    asyncio.run(check())
    assert state.api_versions == {"2024-07": 2}


def test_sandbox_latency_is_applied(fake: Fake) -> None:
    fake.state.latency = 0.3

    async def check() -> float:
        started = time.monotonic()
        await fetch(f"{fake.base_url}/{SHOP}/admin/api/2026-10/graphql.json", "POST", body="{}")
        return time.monotonic() - started

    assert asyncio.run(check()) >= 0.3


def test_no_secret_reaches_logs_or_error_messages(fake: Fake, caplog: pytest.LogCaptureFixture) -> None:
    """Drive every failure path once, then look for every code, token and secret the sandbox issued."""
    messages: list[str] = []

    async def flow(provider: ShopifyProvider) -> None:
        account = await connect(provider)
        assert account.tokens is not None
        for endpoint, mode in (("access_token", "500"), ("access_token", "garbage"), ("graphql", "500")):
            fake.state.fail_next(endpoint, mode)
            try:
                await connect(provider)
            except ProviderError as exc:
                messages.append(str(exc))
        for mode in ("invalid_grant", "500"):
            fake.state.fail_next("access_token", mode)
            try:
                await provider.refresh(SHOP, account.tokens)
            except (ProviderError, ReconnectRequired) as exc:
                messages.append(str(exc))
        for pairs in (callback(fake.state, secret="wrong"), callback(fake.state, timestamp=1)):
            try:
                provider.verify_callback(Args(pairs))
            except InvalidSignature as exc:
                messages.append(str(exc))
        await provider.revoke(SHOP, TokenSet(access_token="shpat_dead"))

    with caplog.at_level(logging.DEBUG):
        fake.run(flow)
    assert len(messages) == 7
    secrets = fake.state.issued_secrets()
    haystack = caplog.text + "\n".join(messages)
    assert len(secrets) > 5
    assert not [s for s in secrets if s in haystack]


def test_sandbox_rest_uninstall(fake: Fake) -> None:
    state = fake.state
    token = state.issue_tokens(SHOP, "read_products", expiring=True)["access_token"]
    url = f"{fake.base_url}/{SHOP}/admin/api_permissions/current.json"

    async def check() -> None:
        assert (await fetch(url, "DELETE")).code == 401
        assert (await fetch(url, "DELETE", headers={"X-Shopify-Access-Token": token})).code == 200
        assert (await fetch(url, "DELETE", headers={"X-Shopify-Access-Token": token})).code == 401

    asyncio.run(check())
    assert state.uninstalled == [SHOP] and state.live_tokens(SHOP, "refresh") == []
    assert state.requests("api_permissions") == 3
