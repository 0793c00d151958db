"""The original app's whole flow, end to end over real HTTP: a shop, then Facebook Pages, one UUID.

Then what the platforms send afterwards: Shopify's uninstall and redact webhooks and
Facebook's deauthorize and data-deletion callbacks, through linkd's generic routes.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest

from providers.facebook_sandbox import tamper_signature

from .browser import Browser
from .flows import FacebookDriver, ShopifyDriver, to_callback


@pytest.fixture
def sworld(make_world: Any) -> Any:
    return make_world(LINKD_PROVIDERS="shopify,facebook")


def connect_shop_then_pages(world: Any, browser: Browser) -> tuple[dict[str, Any], dict[str, Any]]:
    shop = ShopifyDriver().connect(world, browser)
    assert shop.status == 200, shop.text
    pages = browser.get(to_callback(browser, world.url + "/facebook/login"))
    assert pages.status == 200, pages.text
    return shop.json(), pages.json()


def test_shop_then_pages_make_one_user_and_the_session_ends(sworld: Any) -> None:
    browser = Browser("application/json")
    shop, pages = connect_shop_then_pages(sworld, browser)
    assert shop["user_uuid"] == pages["user_uuid"]
    assert [a["id"] for a in shop["accounts"]] == ["acme.myshopify.com"]
    kinds = sorted(a["kind"] for a in pages["accounts"])
    assert kinds == ["page", "page", "user"]
    # the session ended after Facebook ("clear after use"): cookie gone, row gone
    assert browser.cookie("session_id") is None
    assert sworld.count("sessions", "sessions") == 0
    # one user holds the shop, the Facebook user and its two Pages
    assert sworld.count("tokens", "users") == 1
    rows = sworld.sql("tokens", "SELECT provider, kind, parent_id IS NOT NULL FROM connections ORDER BY id")
    assert rows == [
        ("shopify", "shop", 0),
        ("facebook", "user", 0),
        ("facebook", "page", 1),
        ("facebook", "page", 1),
    ]
    # and nothing a platform minted is in a response or a database file
    secrets = [*ShopifyDriver().secrets(sworld), *FacebookDriver().secrets(sworld), shop["user_uuid"]]
    bodies = b"".join(r.body + str(r.headers).encode() for r in browser.log if "/_sandbox/" not in r.url)
    for path in sworld.db_files():
        data = path.read_bytes()
        assert not [s for s in secrets if s.encode() in data], path.name
    assert not [s for s in secrets[:-1] if s.encode() in bodies]


def test_facebook_without_a_profile_says_what_to_connect_first(sworld: Any) -> None:
    response = Browser("application/json").get(sworld.url + "/facebook/login")
    assert response.status == 400 and response.json()["error"] == "session_required"
    assert "Shopify" in response.json()["message"]
    page = Browser("text/html").get(sworld.url + "/facebook/login")
    assert page.status == 400 and "Connect Shopify first" in page.text
    assert not [r for r in sworld.sandboxes["facebook"].requests if r.endpoint == "dialog"]
    assert sworld.count("sessions", "states") == 0


def post_webhook(world: Any, path: str, headers: dict[str, str], body: bytes) -> Any:
    return Browser("application/json").post(world.url + path, data=body, headers=headers)


def test_shopify_uninstall_webhook_removes_the_shop_and_leaves_no_trace(sworld: Any) -> None:
    browser = Browser("application/json")
    assert ShopifyDriver().connect(sworld, browser).status == 200
    fake = sworld.sandboxes["shopify"]
    headers, body = fake.signed_webhook("app/uninstalled", "acme.myshopify.com")
    forged = post_webhook(sworld, "/shopify/webhook", {**headers, "X-Shopify-Hmac-Sha256": "AAAA"}, body)
    assert forged.status == 401 and sworld.count("tokens", "connections") == 1
    accepted = post_webhook(sworld, "/shopify/webhook", headers, body)
    assert accepted.status == 200 and sworld.count("tokens", "connections") == 0
    again = post_webhook(sworld, "/shopify/webhook", headers, body)  # a duplicate delivery
    assert again.status == 200
    for path in sworld.db_files():
        data = path.read_bytes()
        assert b"acme.myshopify.com" not in data, path.name
        assert not [s for s in fake.minted if s.encode() in data]


def test_facebook_deauthorize_and_data_deletion(sworld: Any) -> None:
    browser = Browser("application/json")
    shop, pages = connect_shop_then_pages(sworld, browser)
    fb_user = next(a["id"] for a in pages["accounts"] if a["kind"] == "user")
    fake = sworld.sandboxes["facebook"]
    tampered = tamper_signature(fake.signed_request(fb_user))
    refused = post_webhook(
        sworld,
        "/facebook/webhook/data-deletion",
        {"Content-Type": "application/x-www-form-urlencoded"},
        urllib.parse.urlencode({"signed_request": tampered}).encode(),
    )
    assert refused.status in (400, 401) and sworld.count("tokens", "connections") == 4
    signed = fake.signed_request(fb_user)
    response = post_webhook(
        sworld,
        "/facebook/webhook/data-deletion",
        {"Content-Type": "application/x-www-form-urlencoded"},
        urllib.parse.urlencode({"signed_request": signed}).encode(),
    )
    assert response.status == 200, response.text
    body = response.json()
    assert set(body) == {"url", "confirmation_code"}
    assert body["url"] == f"{sworld.url}/facebook/deletion/{body['confirmation_code']}"
    assert sworld.count("tokens", "connections") == 1  # the shop stays; the Facebook user and Pages are gone
    status = Browser("application/json").get(body["url"])
    assert status.status == 200 and status.json()["status"] == "completed"
    assert fb_user not in status.text and shop["user_uuid"] not in status.text
    assert Browser("application/json").get(sworld.url + "/facebook/deletion/" + "0" * 20).status == 404
    assert json.loads(Browser("application/json").get(sworld.url + "/facebook/deletion/zz").text)["error"]
