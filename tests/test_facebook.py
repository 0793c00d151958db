"""The Facebook provider against its sandbox, over real HTTP on loopback.

Each test serves a fresh fake Facebook (dialog and Graph under one base URL with a
path prefix, as `linkd demo` mounts it) and drives `FacebookProvider` directly:
the connect, token refresh and revocation, `signed_request` callbacks, upstream
failures and settings validation. End-to-end tests through the web app live elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import tornado.web
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from linkd.crypto import pkce_pair
from linkd.errors import BadRequest, NotFound, ProviderError, ReconnectRequired, Unauthorized
from linkd.provider import Account, Args, Callback, ProviderContext, Sandbox, TokenSet, WebhookRequest
from linkd.upstream import Upstream
from providers.facebook import FacebookProvider, register_providers
from providers.facebook.settings import GRAPH_VERSION
from providers.facebook_sandbox import FacebookSandboxState, sign, tamper_payload, tamper_signature

from .servers import ServerThread, free_port, serve_handlers

REDIRECT_URI = "http://127.0.0.1:1/facebook/callback"
PREFIX = "/_sandbox/facebook"


@dataclass
class Fake:
    sandbox: Sandbox
    server: ServerThread
    base_url: str

    @property
    def state(self) -> FacebookSandboxState:
        state = self.sandbox.state
        assert isinstance(state, FacebookSandboxState)
        return state

    def settings(self, **overrides: str) -> dict[str, str]:
        values = {s.name: s.default for s in FacebookProvider.settings if s.default is not None}
        values.update(self.sandbox.settings)
        values.update(overrides)
        assert FacebookProvider.setting_problems(values) == []
        return values

    def run(
        self,
        body: Callable[[FacebookProvider], Awaitable[Any]],
        *,
        redirect_uri: str = REDIRECT_URI,
        timeout: float = 5,
        settings: dict[str, str] | None = None,
    ) -> Any:
        """Run `body(provider)` in a fresh loop with its own Upstream, as the core would."""

        async def main() -> Any:
            upstream = Upstream(timeout)
            context = ProviderContext(
                self.settings(**(settings or {})), redirect_uri, "http://127.0.0.1:1", upstream
            )
            try:
                return await body(FacebookProvider(context))
            finally:
                upstream.close()

        return asyncio.run(main())


@pytest.fixture
def fake() -> Iterator[Fake]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}{PREFIX}"
    sandbox = FacebookProvider.sandbox(base_url)
    assert sandbox is not None
    handlers = [(PREFIX + pattern, handler, kw) for pattern, handler, kw in sandbox.handlers]
    # the fake platform's own access log is not linkd's (it prints query strings, as a platform's may)
    app = lambda: tornado.web.Application(handlers, log_function=lambda handler: None)  # noqa: E731
    server = ServerThread(app, port=port).start()
    yield Fake(sandbox, server, base_url)
    server.stop()


async def fetch(url: str) -> HTTPResponse:
    client = AsyncHTTPClient(force_instance=True)
    try:
        return await client.fetch(url, follow_redirects=False, raise_error=False)
    finally:
        client.close()


async def authorize(
    provider: FacebookProvider, state: str = "opaque-state", challenge: str | None = None, auto: bool = True
) -> Args:
    """Send the browser to the dialog (auto-approving) and return the callback's query arguments."""
    url = provider.authorization_url(state=state, context={}, code_challenge=challenge)
    response = await fetch(url + ("&sandbox_auto=1" if auto else ""))
    assert response.code == 302, response.body
    location = response.headers["Location"]
    assert location.startswith(provider.context.redirect_uri + "?")
    return Args(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query, keep_blank_values=True))


async def connect(provider: FacebookProvider, use_pkce: bool = True) -> list[Account]:
    verifier, challenge = pkce_pair() if use_pkce else (None, None)
    args = await authorize(provider, challenge=challenge)
    code = args.get("code")
    assert code
    return await provider.complete(Callback(args, code, {}, provider.context.redirect_uri, verifier))


def proof(secret: str, token: str) -> str:
    return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()


def query_of(uri: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(uri).query, keep_blank_values=True))


# the connect ---------------------------------------------------------------------------


def test_authorization_url_carries_the_configured_redirect_uri_and_s256(fake: Fake) -> None:
    verifier, challenge = pkce_pair()

    async def body(provider: FacebookProvider) -> str:
        return provider.authorization_url(state="s-1", context={}, code_challenge=challenge)

    url = fake.run(body)
    split = urllib.parse.urlsplit(url)
    assert f"{split.scheme}://{split.netloc}{split.path}" == f"{fake.base_url}/{GRAPH_VERSION}/dialog/oauth"
    query = query_of(url)
    assert query == {
        "client_id": fake.state.app_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "pages_messaging,pages_show_list,pages_manage_metadata",
        "response_type": "code",
        "state": "s-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    assert verifier not in url


def test_connect_returns_the_user_with_two_pages_each_with_its_own_token(fake: Fake) -> None:
    before = time.time()
    accounts = fake.run(connect)
    state = fake.state
    assert len(accounts) == 1
    user = accounts[0]
    assert (user.id, user.name, user.kind) == (state.user.id, state.user.name, "user")
    assert user.tokens is not None and user.tokens.extra["kind"] == "user"
    assert state.grants[user.tokens.access_token].kind == "long"  # exchanged server-side (F2)
    assert user.tokens.expires_at is not None and user.tokens.expires_at >= before + 5183944 - 5
    assert [(p.id, p.name, p.kind, p.profile) for p in user.children] == [
        (p.id, p.name, "page", {"category": p.category}) for p in state.user.pages
    ]
    page_tokens = [p.tokens.access_token for p in user.children if p.tokens is not None]
    assert len(set(page_tokens)) == 2
    for page, token in zip(user.children, page_tokens, strict=True):
        assert state.grants[token].kind == "page" and state.grants[token].page_id == page.id
    # code exchange + long-lived exchange; /me once; /me/accounts over two result pages
    assert (state.counts["token"], state.counts["me"], state.counts["accounts"]) == (2, 1, 2)
    assert state.code_exchanges() == 1 and len(state.verifiers()) == 1


def test_every_graph_call_carries_appsecret_proof_and_only_the_token_endpoint_sees_the_secret(
    fake: Fake,
) -> None:
    state = fake.state
    assert state.require_proof
    fake.run(connect)
    graph_requests = [r for r in state.requests if r.endpoint in ("me", "accounts")]
    assert len(graph_requests) == 3
    for request in graph_requests:
        query = query_of(request.uri)
        assert query["appsecret_proof"] == proof(state.app_secret, query["access_token"])
    for request in state.requests:
        seen = request.uri + request.body.decode() + json.dumps(request.headers)
        if request.endpoint == "token":
            assert query_of(request.uri)["client_secret"] == state.app_secret
        else:
            assert state.app_secret not in seen, request.endpoint


def test_the_sandbox_refuses_graph_calls_without_proof_when_it_requires_one(fake: Fake) -> None:
    accounts = fake.run(connect)
    token = accounts[0].tokens.access_token
    url = f"{fake.base_url}/{GRAPH_VERSION}/me?access_token={token}"
    response = asyncio.run(fetch(url))
    assert response.code == 400 and json.loads(response.body)["error"]["code"] == 100
    bad = asyncio.run(fetch(url + "&appsecret_proof=" + proof("not-the-secret", token)))
    assert bad.code == 400 and json.loads(bad.body)["error"]["code"] == 100
    good = asyncio.run(fetch(url + "&appsecret_proof=" + proof(fake.state.app_secret, token)))
    assert good.code == 200 and json.loads(good.body)["id"] == fake.state.user.id


def test_a_redirect_uri_that_differs_from_the_dialogs_fails_the_exchange(fake: Fake) -> None:
    async def body(provider: FacebookProvider) -> None:
        args = await authorize(provider)
        upstream = provider.upstream
        other = FacebookProvider(
            ProviderContext(fake.settings(), REDIRECT_URI + "/", "http://127.0.0.1:1", upstream)
        )
        with pytest.raises(ProviderError):
            await other.complete(Callback(args, args.get("code") or "", {}, REDIRECT_URI + "/", None))

    fake.run(body)
    assert fake.state.counts["token"] == 1 and fake.state.counts["me"] == 0


def test_a_replayed_code_is_refused(fake: Fake) -> None:
    async def body(provider: FacebookProvider) -> None:
        args = await authorize(provider)
        callback = Callback(args, args.get("code") or "", {}, REDIRECT_URI, None)
        assert await provider.complete(callback)
        with pytest.raises(ProviderError):
            await provider.complete(callback)

    fake.run(body)
    assert fake.state.counts["me"] == 1


def test_a_wrong_or_missing_pkce_verifier_is_refused(fake: Fake) -> None:
    async def body(provider: FacebookProvider) -> None:
        for wrong in (pkce_pair()[0], None):
            _, challenge = pkce_pair()
            args = await authorize(provider, challenge=challenge)
            with pytest.raises(ProviderError):
                await provider.complete(Callback(args, args.get("code") or "", {}, REDIRECT_URI, wrong))

    fake.run(body)
    assert fake.state.counts["me"] == 0


@pytest.mark.parametrize("where", ["other-port", "https", "outside-prefix"])
def test_a_paging_link_off_the_graph_host_is_not_followed(fake: Fake, where: str) -> None:
    hits: list[str] = []

    class Trap(tornado.web.RequestHandler):
        def get(self, path: str) -> None:
            hits.append(path)
            self.finish({"data": [{"id": "999", "name": "Evil", "access_token": "x"}]})

    trap = serve_handlers([(r"/(.*)", Trap)])
    try:
        netloc = urllib.parse.urlsplit(fake.base_url).netloc
        fake.state.paging_next_base = {
            "other-port": trap.url + PREFIX,
            "https": f"https://{netloc}{PREFIX}",
            "outside-prefix": f"http://{netloc}/elsewhere",
        }[where]
        with pytest.raises(ProviderError):
            fake.run(connect)
    finally:
        trap.stop()
    assert hits == []
    assert fake.state.counts["accounts"] == 1


# after the connect ------------------------------------------------------------------------


def test_refresh_extends_the_user_token_and_a_dead_token_needs_a_reconnect(fake: Fake) -> None:
    async def body(provider: FacebookProvider) -> None:
        user = (await connect(provider))[0]
        assert user.tokens is not None
        assert provider.can_refresh(user.tokens)
        assert not any(provider.can_refresh(p.tokens) for p in user.children if p.tokens)
        fresh = await provider.refresh(user.id, user.tokens)
        assert fresh.access_token != user.tokens.access_token
        assert fake.state.grants[fresh.access_token].kind == "long"
        assert fresh.expires_at is not None and fresh.extra["kind"] == "user"
        fake.state.fail("token", "500")
        with pytest.raises(ProviderError) as passing:
            await provider.refresh(user.id, fresh)
        assert not isinstance(passing.value, ReconnectRequired)
        fake.state.expire_tokens()
        with pytest.raises(ReconnectRequired):
            await provider.refresh(user.id, fresh)

    fake.run(body)


def test_a_190_answer_on_refresh_needs_a_reconnect(fake: Fake) -> None:
    async def body(provider: FacebookProvider) -> None:
        user = (await connect(provider))[0]
        assert user.tokens is not None
        fake.state.fail("token", "190")
        with pytest.raises(ReconnectRequired):
            await provider.refresh(user.id, user.tokens)

    fake.run(body)


def test_revoke_deletes_the_grant_with_the_user_token_only(fake: Fake) -> None:
    async def body(provider: FacebookProvider) -> None:
        user = (await connect(provider))[0]
        assert user.tokens is not None
        page = user.children[0]
        assert page.tokens is not None
        await provider.revoke(page.id, page.tokens)
        assert fake.state.counts["permissions"] == 0
        await provider.revoke(user.id, user.tokens)
        assert fake.state.revoked_users == [user.id]
        assert fake.state.grants[page.tokens.access_token].revoked
        await provider.revoke(user.id, user.tokens)  # already gone (190): nothing to do

    fake.run(body)
    deletes = [r for r in fake.state.requests if r.endpoint == "permissions"]
    assert [r.method for r in deletes] == ["DELETE", "DELETE"]
    query = query_of(deletes[0].uri)
    assert query["appsecret_proof"] == proof(fake.state.app_secret, query["access_token"])


# upstream trouble -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "mode"),
    [
        ("token", "500"),
        ("token", "garbage"),
        ("token", "html"),
        ("token", "redirect"),
        ("me", "500"),
        ("me", "html"),
        ("me", "empty"),
        ("me", "190"),
        ("accounts", "garbage"),
        ("accounts", "500"),
    ],
)
def test_upstream_failures_end_the_connect_with_a_clean_provider_error(
    fake: Fake, endpoint: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake.state.fail(endpoint, mode)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ProviderError) as raised:
        fake.run(connect)
    assert not isinstance(raised.value, ReconnectRequired)
    assert fake.state.counts[endpoint] >= 1
    text = raised.value.message + repr(raised.value.data) + caplog.text
    for secret in fake.state.secrets():
        assert secret not in text


def test_an_upstream_that_does_not_answer_in_time_is_a_provider_error(fake: Fake) -> None:
    fake.state.slow_seconds = 3
    fake.state.fail("me", "slow")
    started = time.monotonic()
    with pytest.raises(ProviderError):
        fake.run(connect, timeout=0.5)
    assert time.monotonic() - started < 2.5


def test_nothing_secret_reaches_the_logs_of_a_connect(fake: Fake, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake.run(connect)
    fake.state.fail("accounts", "190")
    with pytest.raises(ProviderError):
        fake.run(connect)
    assert fake.state.secrets()
    for secret in fake.state.secrets():
        assert secret not in caplog.text


# signed_request callbacks ----------------------------------------------------------------


class Actions:
    """What the core lets a webhook do, recorded."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.removed: list[list[str]] = []
        self.deletions: list[list[str]] = []

    async def first_delivery(self, event_id: str) -> bool:
        new = event_id not in self.seen
        self.seen.add(event_id)
        return new

    async def remove_accounts(self, account_ids: Sequence[str], reason: str = "uninstalled") -> int:
        self.removed.append(list(account_ids))
        return len(account_ids)

    async def create_deletion_request(self, account_ids: Sequence[str]) -> tuple[str, str]:
        self.deletions.append(list(account_ids))
        return "0123456789abcdef0123", "http://127.0.0.1:1/facebook/deletion/0123456789abcdef0123"


def form(signed_request: str) -> bytes:
    return urllib.parse.urlencode({"signed_request": signed_request}).encode()


def deliver(
    fake: Fake, kind: str | None, body: bytes, actions: Actions | None = None, **settings: str
) -> Any:
    async def call(provider: FacebookProvider) -> Any:
        request = WebhookRequest(kind, {"Content-Type": "application/x-www-form-urlencoded"}, body, Args([]))
        return await provider.webhook(request, actions or Actions())

    return fake.run(call, settings=settings)


def test_deauthorize_removes_the_user_once(fake: Fake) -> None:
    actions = Actions()
    body = form(fake.state.signed_request("100000000000042"))
    response = deliver(fake, "deauthorize", body, actions)
    assert response.status == 200
    assert actions.removed == [["100000000000042"]]
    assert deliver(fake, "deauthorize", body, actions).status == 200  # a retry or a replay
    assert actions.removed == [["100000000000042"]]
    assert not any(body.decode() in event for event in actions.seen)  # the HMAC is not an event id


def test_data_deletion_answers_with_a_status_url_and_confirmation_code(fake: Fake) -> None:
    actions = Actions()
    response = deliver(fake, "data-deletion", form(fake.state.signed_request("100000000000042")), actions)
    assert (response.status, response.body) == (
        200,
        {
            "url": "http://127.0.0.1:1/facebook/deletion/0123456789abcdef0123",
            "confirmation_code": "0123456789abcdef0123",
        },
    )
    assert actions.deletions == [["100000000000042"]]


def test_signed_request_variants_that_verify(fake: Fake) -> None:
    state = fake.state
    previous = "a-former-app-secret-0123456789"
    good = [
        state.signed_request(),
        state.signed_request(algorithm="hmac-sha256"),  # Meta's reference parser upper-cases it
        state.signed_request(user_id=12345),  # a number is read as the same id
        state.signed_request(secret=previous),
        state.signed_request().replace(".", "=.", 1),  # signature sent with its padding
    ]
    for value in good:
        actions = Actions()
        assert (
            deliver(fake, "deauthorize", form(value), actions, FACEBOOK_APP_SECRET_PREVIOUS=previous).status
            == 200
        )
        assert len(actions.removed) == 1


def _raw(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(payload: Any) -> str:
    return _raw(json.dumps(payload).encode())


def _signed(encoded_payload: str, secret: str) -> str:
    return f"{sign(encoded_payload, secret)}.{encoded_payload}"


@pytest.mark.parametrize(
    ("variant", "error"),
    [
        ("flipped-signature", Unauthorized),
        ("flipped-payload", Unauthorized),
        ("wrong-secret", Unauthorized),
        ("previous-secret-not-configured", Unauthorized),
        ("algorithm-none-signed", Unauthorized),
        ("algorithm-none-unsigned", Unauthorized),
        ("algorithm-hs512", Unauthorized),
        ("too-old", Unauthorized),
        ("from-the-future", BadRequest),
        ("bad-base64-signature", BadRequest),
        ("standard-base64-signature", BadRequest),
        ("bad-base64-payload", BadRequest),
        ("bad-json", BadRequest),
        ("not-an-object", BadRequest),
        ("missing-user-id", BadRequest),
        ("non-numeric-user-id", BadRequest),
        ("issued-at-nan", BadRequest),
        ("no-dot", BadRequest),
        ("empty", BadRequest),
    ],
)
def test_signed_request_variants_that_are_refused(fake: Fake, variant: str, error: type[Exception]) -> None:
    state = fake.state
    secret = state.app_secret
    now = int(time.time())
    variants: dict[str, Callable[[], str]] = {
        "flipped-signature": lambda: tamper_signature(state.signed_request()),
        "flipped-payload": lambda: tamper_payload(state.signed_request()),
        "wrong-secret": lambda: state.signed_request(secret="not-the-app-secret"),
        "previous-secret-not-configured": lambda: state.signed_request(
            secret="a-former-app-secret-0123456789"
        ),
        "algorithm-none-signed": lambda: state.signed_request(algorithm="none"),
        "algorithm-none-unsigned": lambda: (
            "." + _unsigned({"algorithm": "none", "issued_at": now, "user_id": "1"})
        ),
        "algorithm-hs512": lambda: state.signed_request(algorithm="HMAC-SHA512"),
        "too-old": lambda: state.signed_request(issued_at=now - 3 * 24 * 3600),
        "from-the-future": lambda: state.signed_request(issued_at=now + 3600),
        "bad-base64-signature": lambda: "abc!def." + state.signed_request().partition(".")[2],
        "standard-base64-signature": lambda: "ab+/cd" + state.signed_request()[6:],
        "bad-base64-payload": lambda: _signed("e30*", secret),
        "bad-json": lambda: _signed(_raw(b'{"user_id":'), secret),
        "not-an-object": lambda: _signed(_unsigned(["user_id", "1"]), secret),
        "missing-user-id": lambda: _signed(_unsigned({"algorithm": "HMAC-SHA256", "issued_at": now}), secret),
        "non-numeric-user-id": lambda: state.signed_request(user_id="1; DROP"),
        "issued-at-nan": lambda: _signed(
            _raw(b'{"algorithm":"HMAC-SHA256","issued_at":NaN,"user_id":"1"}'), secret
        ),
        "no-dot": lambda: state.signed_request().replace(".", ""),
        "empty": lambda: "",
    }
    value = variants[variant]()
    actions = Actions()
    with pytest.raises(error):
        deliver(fake, "data-deletion", form(value), actions)
    assert actions.removed == [] and actions.deletions == [] and actions.seen == set()


def test_a_webhook_body_must_hold_exactly_one_signed_request(fake: Fake) -> None:
    good = fake.state.signed_request()
    for body in (b"", b"other=1", form(good) + b"&" + form(good), b"signed_request=\xff\xfe"):
        with pytest.raises(BadRequest):
            deliver(fake, "deauthorize", body)


def test_unknown_webhook_kinds_are_not_found(fake: Fake) -> None:
    for kind in (None, "uninstalled", "Deauthorize"):
        with pytest.raises(NotFound):
            deliver(fake, kind, form(fake.state.signed_request()))


# the sandbox itself ------------------------------------------------------------------------


def test_the_dialog_asks_for_permission_and_escapes_what_it_shows(fake: Fake) -> None:
    state = fake.state
    state.user.name = '<script>alert("x")</script>'
    scope = "pages_show_list,<img src=x onerror=alert(1)>"
    params = {"client_id": state.app_id, "redirect_uri": REDIRECT_URI, "scope": scope, "state": "s<1>"}
    base = f"{fake.base_url}/{GRAPH_VERSION}/dialog"
    page = asyncio.run(fetch(f"{base}/oauth?{urllib.parse.urlencode(params)}"))
    assert page.code == 200
    text = page.body.decode()
    assert "Show a list of the Pages you manage" in text
    assert "<script>alert" not in text and "<img" not in text
    assert "&lt;script&gt;" in text
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert "http://" not in text.split("</style>")[1].replace(
        "http://127.0.0.1:1", ""
    )  # no third-party resource
    request_id = text.split('name="request" value="')[1].split('"')[0]
    cancel = asyncio.run(fetch(f"{base}/decide?request={request_id}&choice=cancel"))
    assert cancel.code == 302
    assert query_of(cancel.headers["Location"]) == {
        "error": "access_denied",
        "error_code": "200",
        "error_description": "Permissions error",
        "error_reason": "user_denied",
        "state": "s<1>",
    }
    replay = asyncio.run(fetch(f"{base}/decide?request={request_id}&choice=continue"))
    assert replay.code == 400
    page = asyncio.run(fetch(f"{base}/oauth?{urllib.parse.urlencode(params)}"))
    request_id = page.body.decode().split('name="request" value="')[1].split('"')[0]
    approved = asyncio.run(fetch(f"{base}/decide?request={request_id}&choice=continue"))
    assert approved.code == 302
    location = query_of(approved.headers["Location"])
    assert location["state"] == "s<1>" and location["code"] in state.minted


@pytest.mark.parametrize(
    "change",
    [
        {"client_id": "999999999999999"},
        {"redirect_uri": "javascript:alert(1)"},
        {"redirect_uri": "http://127.0.0.1:1/elsewhere"},
        {"response_type": "token"},
        {"code_challenge": "x" * 43, "code_challenge_method": "plain"},
    ],
)
def test_the_dialog_refuses_bad_requests(fake: Fake, change: dict[str, str]) -> None:
    fake.state.allowed_redirect_uris = {REDIRECT_URI}
    params = {"client_id": fake.state.app_id, "redirect_uri": REDIRECT_URI, "sandbox_auto": "1", **change}
    response = asyncio.run(
        fetch(f"{fake.base_url}/{GRAPH_VERSION}/dialog/oauth?{urllib.parse.urlencode(params)}")
    )
    assert response.code == 400
    assert not [m for m in fake.state.minted if m.startswith("fbcode-")]


def test_the_sandbox_serves_the_seed_apps_calls_when_proof_is_off(fake: Fake) -> None:
    """The seed app: unencoded dialog URL, v19.0, GET token exchange, /me/accounts without proof."""
    state = fake.state
    state.require_proof = False
    state.auto_approve = True
    redirect = "http://127.0.0.1:5001/facebook/callback"
    dialog = (
        f"{fake.base_url}/v19.0/dialog/oauth?client_id={state.app_id}&redirect_uri={redirect}"
        "&scope=pages_messaging,pages_show_list,pages_manage_metadata&response_type=code&state=abc"
    )
    code = query_of(asyncio.run(fetch(dialog)).headers["Location"])["code"]
    exchange = urllib.parse.urlencode(
        {"client_id": state.app_id, "redirect_uri": redirect, "client_secret": state.app_secret, "code": code}
    )
    token = json.loads(asyncio.run(fetch(f"{fake.base_url}/v19.0/oauth/access_token?{exchange}")).body)
    assert token["token_type"] == "bearer" and token["expires_in"] > 0
    pages = asyncio.run(fetch(f"{fake.base_url}/v19.0/me/accounts?access_token={token['access_token']}"))
    assert pages.code == 200
    data = json.loads(pages.body)
    assert data["data"][0]["access_token"] in state.minted
    assert data["paging"]["next"].startswith(f"{fake.base_url}/v19.0/")
    state.require_proof = True
    refused = asyncio.run(fetch(f"{fake.base_url}/v19.0/me/accounts?access_token={token['access_token']}"))
    assert refused.code == 400


# settings and registration -----------------------------------------------------------------


def _problems(fake: Fake, **overrides: str) -> list[str]:
    values = {s.name: s.default for s in FacebookProvider.settings if s.default is not None}
    values.update(fake.sandbox.settings)
    values.update(overrides)
    return FacebookProvider.setting_problems(values)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FACEBOOK_APP_ID", "1" * 14),
        ("FACEBOOK_APP_ID", "1" * 21),
        ("FACEBOOK_APP_ID", "12345678901234a"),
        ("FACEBOOK_APP_ID", "\uff11" * 15),  # fullwidth digits
        ("FACEBOOK_APP_ID", "123456789012345\n"),
        ("FACEBOOK_APP_SECRET", "your-app-secret"),
        ("FACEBOOK_APP_SECRET", "changeme"),
        ("FACEBOOK_APP_SECRET", "replace_with_your_app_secret"),
        ("FACEBOOK_APP_SECRET", "with space"),
        ("FACEBOOK_APP_SECRET_PREVIOUS", "changeme"),
        ("FACEBOOK_GRAPH_VERSION", "19.0"),
        ("FACEBOOK_GRAPH_VERSION", "latest"),
        ("FACEBOOK_GRAPH_VERSION", "v19.0/../x"),
        ("FACEBOOK_GRAPH_BASE_URL", "http://graph.facebook.com"),
        ("FACEBOOK_DIALOG_BASE_URL", "https://www.facebook.com/?x=1"),
        ("FACEBOOK_GRAPH_BASE_URL", "https://user@graph.facebook.com"),
        ("FACEBOOK_REDIRECT_URI", "http://example.com/facebook/callback"),
        ("FACEBOOK_SCOPES", "pages_show_list pages_messaging"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(fake: Fake, name: str, value: str) -> None:
    problems = _problems(fake, **{name: value})
    assert len(problems) == 1 and problems[0].startswith(name + " ")
    assert value.strip() not in problems[0] or name == "FACEBOOK_GRAPH_VERSION"


def test_required_settings_and_good_values(fake: Fake) -> None:
    assert _problems(fake) == []
    assert (
        _problems(fake, FACEBOOK_APP_ID="1" * 15, FACEBOOK_REDIRECT_URI="https://linkd.example/fb/cb") == []
    )
    assert _problems(fake, FACEBOOK_APP_ID="1" * 20, FACEBOOK_APP_SECRET_PREVIOUS="0a1b2c3d4e5f,9f8e7d") == []
    missing = FacebookProvider.setting_problems({})
    assert missing == ["FACEBOOK_APP_ID is not set", "FACEBOOK_APP_SECRET is not set"]
    defaults = {s.name: s.default for s in FacebookProvider.settings}
    assert defaults["FACEBOOK_GRAPH_VERSION"] == GRAPH_VERSION != "v19.0"
    assert defaults["FACEBOOK_DIALOG_BASE_URL"] == "https://www.facebook.com"
    assert defaults["FACEBOOK_GRAPH_BASE_URL"] == "https://graph.facebook.com"
    assert next(s for s in FacebookProvider.settings if s.name == "FACEBOOK_APP_SECRET").secret


def test_the_plugin_registers_the_provider_as_declared() -> None:
    registered: list[type] = []
    register_providers(registered.append)
    assert registered == [FacebookProvider]
    cls = FacebookProvider
    assert (cls.name, cls.title, cls.may_start_user, cls.ends_session) == (
        "facebook",
        "Facebook",
        False,
        True,
    )
    assert cls.redirect_uri_setting == "FACEBOOK_REDIRECT_URI" and cls.description
    assert "Shopify" not in cls.description


def test_page_tokens_are_not_refreshed_and_tokens_round_trip(fake: Fake) -> None:
    async def body(provider: FacebookProvider) -> None:
        page = TokenSet.from_json(TokenSet(access_token="p", extra={"kind": "page"}).to_json())
        assert not provider.can_refresh(page)
        with pytest.raises(ProviderError):
            await provider.refresh("1", page)
        user = TokenSet.from_json(
            TokenSet("u", expires_at=time.time() + 60, extra={"kind": "user"}).to_json()
        )
        assert provider.can_refresh(user)

    fake.run(body)
    assert fake.state.counts["token"] == 0
