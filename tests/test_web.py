"""Routes, headers and hostile input at the HTTP edge (SECURITY.md I1–I3, I6)."""

from __future__ import annotations

import http.client
from typing import Any

import pytest

from .browser import Browser


@pytest.fixture
def eworld(make_world: Any) -> Any:
    return make_world(LINKD_PROVIDERS="example")


def raw_get(
    world: Any, target: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """Send a request line exactly as given (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", world.port, timeout=10)
    conn.putrequest("GET", target, skip_accept_encoding=True)
    for key, value in {"Accept": "application/json", **(headers or {})}.items():
        conn.putheader(key, value)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body, dict(response.getheaders())


@pytest.mark.parametrize(
    "path",
    [
        "/../login",
        "/SHOPIFY/login",
        "/EXAMPLE/login",
        "/__init__/login",
        "/example%00/login",
        "/exam ple/login",
        "/api/login",
        "/healthz/login",
        "/nosuch/callback",
        "/example/x/y/login",
        "/.example/login",
    ],
)
def test_provider_segments_match_registered_names_only(eworld: Any, path: str) -> None:
    status, body, _ = raw_get(eworld, path.replace(" ", "%20"))
    assert status == 404, (path, status, body[:200])
    assert b"Traceback" not in body


@pytest.mark.parametrize(
    "query",
    [
        "state=a&state=b",  # repeated
        "code=%00abc&state=x",  # NUL
        "code=a%0d%0aSet-Cookie:x&state=x",  # CR/LF
        "code=%ff%fe&state=x",  # invalid UTF-8
        "state=" + "A" * 9000,  # oversized
        "&".join(f"p{i}=1" for i in range(2000)),  # 2,000 parameters
    ],
    ids=["repeated", "nul", "crlf", "bad-utf8", "oversized", "many-params"],
)
def test_hostile_callback_queries_get_a_clean_400(eworld: Any, query: str) -> None:
    links = eworld.count("tokens", "connections")
    status, body, headers = raw_get(eworld, "/example/callback?" + query)
    assert status == 400, (status, body[:300])
    assert b"Traceback" not in body and b"Set-Cookie:x" not in body
    if body:  # Tornado itself answers a bare 400 to a query with more than its field limit
        assert headers.get("Content-Type", "").startswith("application/json")
    assert eworld.count("tokens", "connections") == links


def test_oversized_headers_are_refused_not_crashing(eworld: Any) -> None:
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError, http.client.BadStatusLine)):
        status, _, _ = raw_get(eworld, "/", {"X-Big": "a" * 70000})
        assert 400 <= status < 500  # some servers answer 431 instead of closing
        raise ConnectionResetError
    assert raw_get(eworld, "/healthz")[0] == 200


def test_security_headers_on_oauth_routes_and_pages(eworld: Any) -> None:
    browser = Browser("text/html")
    for response in (browser.get(eworld.url + "/example/login"), browser.get(eworld.url + "/")):
        h = response.headers
        assert h["Referrer-Policy"] == "no-referrer"
        assert h["Cache-Control"] == "no-store"
        assert h["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
        assert "Access-Control-Allow-Origin" not in h
        assert "Strict-Transport-Security" not in h  # plain http here


def test_errors_are_json_for_json_clients_and_pages_for_browsers(eworld: Any) -> None:
    json_error = Browser("application/json").get(eworld.url + "/example/callback?state=nope")
    assert json_error.status == 400 and json_error.json()["error"] == "invalid_state"
    page = Browser("text/html").get(eworld.url + "/example/callback?state=nope")
    assert page.status == 400 and page.headers["Content-Type"].startswith("text/html")
    assert "Start again" in page.text and "Traceback" not in page.text
    missing = Browser("application/json").get(eworld.url + "/no/such/page/at/all")
    assert missing.status == 404 and missing.json() == {"error": "not_found", "message": "Not found."}


def test_index_lists_enabled_providers(eworld: Any) -> None:
    body = Browser("application/json").get(eworld.url + "/").json()
    assert body == {"status": "ok", "providers": ["example"], "user_uuid": None, "accounts": []}
    page = Browser("text/html").get(eworld.url + "/")
    assert page.status == 200 and 'action="/example/login"' in page.text


def test_healthz(eworld: Any) -> None:
    response = Browser("application/json").get(eworld.url + "/healthz")
    assert response.status == 200 and response.json() == {"status": "ok"}


def test_debug_mode_is_off(eworld: Any) -> None:
    app_settings = eworld.server.app.settings
    assert not app_settings.get("debug") and not app_settings.get("serve_traceback")
    assert not app_settings.get("autoreload")


def test_success_url_receives_the_browser_after_a_connect(make_world: Any) -> None:
    world = make_world(LINKD_PROVIDERS="example", LINKD_SUCCESS_URL="/?linked=1")
    browser = Browser("text/html")
    response = browser.follow(world.url + "/example/login")
    assert response.history[-1].status == 302 and response.history[-1].headers["Location"] == "/?linked=1"
    assert response.status == 200 and world.count("tokens", "connections") == 1


def test_callback_success_page_shows_what_was_linked_and_no_token(make_world: Any) -> None:
    world = make_world(LINKD_PROVIDERS="example")
    response = Browser("text/html").follow(world.url + "/example/login")
    assert (
        response.status == 200 and "Example connected" in response.text and "Example user-1" in response.text
    )
    assert not [s for s in world.sandboxes["example"].minted if s in response.text]
