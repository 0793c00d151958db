"""SECURITY.md S1–S8, C1–C6, T2, D1, D4 attacked from outside, over every provider with a driver.

Each test runs a real linkd (real SQLite files, real HTTP) with the providers'
sandboxes, walks the connect flow like a browser and then tampers with it.
"""

from __future__ import annotations

import base64
import hashlib
import re
import stat
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from .browser import Browser
from .flows import DRIVERS, Driver, query_of

DECLARED_DIR = Path(__file__).parent / "providers.d"
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(params=sorted(DRIVERS))
def driver(request: Any) -> Driver:
    return DRIVERS[request.param]()


@pytest.fixture
def pworld(make_world: Any, driver: Driver) -> Any:
    # every installed provider and the declared one, each on its sandbox
    return make_world(LINKD_PROVIDERS_DIR=str(DECLARED_DIR))


def state_count(world: Any) -> int:
    return world.count("sessions", "states")


def link_count(world: Any) -> int:
    return world.count("tokens", "connections")


def assert_refused(response: Any, *codes: str) -> None:
    assert 400 <= response.status < 500, (response.status, response.text[:300])
    body = response.json()
    assert set(body) == {"error", "message"}
    if codes:
        assert body["error"] in codes, body


# ---------------------------------------------------------------------------------- happy path
def test_connect_links_the_account_and_answers_without_tokens(pworld: Any, driver: Driver) -> None:
    browser = Browser("application/json")
    response = driver.connect(pworld, browser)
    assert response.status == 200, response.text
    body = response.json()
    assert set(body) == {"user_uuid", "provider", "accounts"}
    assert body["provider"] == driver.name and body["accounts"]
    assert re.fullmatch(r"[0-9a-f-]{36}", body["user_uuid"])
    for secret in driver.secrets(pworld):
        assert secret not in response.text
    assert link_count(pworld) >= 1


# ---------------------------------------------------------------------------------- states
@pytest.mark.parametrize(
    "state",
    [None, "", "x" * 43, "A" * 42, "a" * 44, "../../etc/passwd", "1700000000:nonce:sig", "%00" * 10],
    ids=["missing", "empty", "random", "short", "long", "path", "seed-format", "nul"],
)
def test_forged_state_is_refused_before_any_side_effect(
    pworld: Any, driver: Driver, state: str | None
) -> None:
    browser = Browser("application/json")
    callback = driver.callback_url(pworld, browser)
    before = (driver.exchanges(pworld), link_count(pworld), state_count(pworld))
    response = browser.get(driver.platform_says(pworld, callback, state=state))
    assert_refused(response, "invalid_state")
    assert (driver.exchanges(pworld), link_count(pworld), state_count(pworld)) == before


def test_replayed_callback_is_refused(pworld: Any, driver: Driver) -> None:
    browser = Browser("application/json")
    callback = driver.callback_url(pworld, browser)
    assert browser.get(callback).status == 200
    exchanges = driver.exchanges(pworld)
    replay = browser.get(callback)
    assert_refused(replay)
    assert driver.exchanges(pworld) == exchanges


def test_callback_from_another_browser_links_nothing(pworld: Any, driver: Driver) -> None:
    victim, attacker = Browser("application/json"), Browser("application/json")
    callback = driver.callback_url(pworld, victim)
    links, exchanges = link_count(pworld), driver.exchanges(pworld)
    assert_refused(attacker.get(callback))
    assert (link_count(pworld), driver.exchanges(pworld)) == (links, exchanges)


def test_expired_state_is_refused_and_purged(pworld: Any, driver: Driver) -> None:
    browser = Browser("application/json")
    callback = driver.callback_url(pworld, browser)
    pworld.sql("sessions", "UPDATE states SET expires_at = 0")
    exchanges = driver.exchanges(pworld)
    assert_refused(browser.get(callback), "invalid_state", "invalid_signature")
    assert state_count(pworld) == 0
    assert driver.exchanges(pworld) == exchanges


def test_state_is_bound_to_its_provider(pworld: Any, driver: Driver) -> None:
    others = [e.name for e in pworld.services.registry.enabled() if e.name != driver.name]
    if not others:
        pytest.skip("needs a second enabled provider")
    browser = Browser("application/json")
    callback = driver.callback_url(pworld, browser)
    query = urllib.parse.urlsplit(callback).query
    links = link_count(pworld)
    for other in others:
        assert_refused(browser.get(f"{pworld.url}/{other}/callback?{query}"))
    assert link_count(pworld) == links


def test_state_is_opaque_and_random(pworld: Any, driver: Driver) -> None:
    browser = Browser("application/json")
    states = {query_of(driver.callback_url(pworld, browser))["state"] for _ in range(3)}
    assert len(states) == 3
    for state in states:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", state)  # 256 bits, nothing readable inside


def test_provider_error_consumes_the_state_and_is_not_reflected(pworld: Any, driver: Driver) -> None:
    browser = Browser("text/html")
    callback = driver.callback_url(pworld, browser)
    evil = "<script>alert(1)</script>"
    hostile = driver.platform_says(pworld, callback, code=None, error="access_denied", error_description=evil)
    response = browser.get(hostile)
    assert 400 <= response.status < 500
    assert evil not in response.text and "<script>" not in response.text
    assert "Traceback" not in response.text
    assert_refused_later = browser.get(callback)
    assert 400 <= assert_refused_later.status < 500


def test_pkce_s256_and_the_verifier_never_leaves_the_server(pworld: Any, driver: Driver) -> None:
    provider = pworld.services.registry.get(driver.name)
    browser = Browser("application/json")
    driver.prepare(pworld, browser)
    login = browser.get(driver.login_url(pworld))
    authorize = query_of(login.location)
    if not provider.pkce:
        assert "code_challenge" not in authorize
        return
    assert authorize["code_challenge_method"] == "S256" and len(authorize["code_challenge"]) == 43
    seen = [login.location, *login.cookies()]
    hop = browser.get(login.location)
    seen += [hop.location, hop.text, *hop.cookies()]
    final = browser.get(hop.location)
    seen += [final.text, *final.cookies()]
    assert final.status == 200, final.text
    verifiers = driver.verifiers(pworld)
    assert verifiers, "the platform received no code_verifier"
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifiers[-1].encode()).digest()).rstrip(b"=").decode()
    assert digest == authorize["code_challenge"]
    assert not any(verifiers[-1] in item for item in seen)


# ---------------------------------------------------------------------------------- sessions
def session_cookie_header(response: Any, name: str = "session_id") -> str:
    headers = [h for h in response.cookies() if h.startswith(name + "=")]
    assert headers, response.cookies()
    return headers[-1]


def test_session_cookie_attributes(pworld: Any, driver: Driver) -> None:
    browser = Browser("application/json")
    assert driver.connect(pworld, browser).status == 200
    headers = [h for r in browser.log for h in r.cookies() if h.startswith("session_id=")]
    assert headers
    for header in headers:
        attributes = [a.strip().lower() for a in header.split(";")]
        value = header.split(";")[0].split("=", 1)[1]
        assert "httponly" in attributes and "samesite=lax" in attributes and "path=/" in attributes
        assert not any(a.startswith("domain") for a in attributes)
        assert any(a.startswith("max-age=") for a in attributes)
        assert "secure" not in attributes  # plain-http public URL
        assert "max-age=0" in attributes or len(value) >= 43  # 256 bits


def test_https_public_url_gives_host_prefixed_secure_cookie(make_world: Any) -> None:
    world = make_world(LINKD_PUBLIC_URL="https://link.example.com", LINKD_PROVIDERS="example")
    response = Browser("application/json").get(world.url + "/example/login")
    header = session_cookie_header(response, "__Host-session_id")
    attributes = [a.strip().lower() for a in header.split(";")]
    assert "secure" in attributes and "path=/" in attributes
    assert "Strict-Transport-Security" in response.headers


def test_made_up_cookie_or_query_or_header_is_no_session(pworld: Any, driver: Driver) -> None:
    browser = Browser("application/json")
    assert driver.connect(pworld, browser).status == 200
    real = browser.cookie("session_id")
    if real is None:
        pytest.skip("this provider ends the session after connecting")
    stranger = Browser("application/json")
    for attempt in (
        stranger.get(pworld.url + "/", headers={"Cookie": "session_id=" + "A" * 43}),
        stranger.get(pworld.url + f"/?session_id={real.value}"),
        stranger.get(
            pworld.url + "/", headers={"X-Session-Id": real.value or "", "Session-Id": real.value or ""}
        ),
    ):
        assert attempt.status == 200 and attempt.json()["user_uuid"] is None


def test_database_hash_is_not_a_usable_cookie(pworld: Any, driver: Driver) -> None:
    browser = Browser("application/json")
    driver.prepare(pworld, browser)
    browser.get(driver.login_url(pworld))
    hashes = [row[0] for row in pworld.sql("sessions", "SELECT id_hash FROM sessions")]
    assert hashes
    cookie = browser.cookie("session_id")
    assert cookie is not None and cookie.value not in hashes
    for value in hashes:
        response = Browser("application/json").get(
            pworld.url + "/", headers={"Cookie": f"session_id={value}"}
        )
        assert response.json()["user_uuid"] is None


def test_expired_session_is_refused_and_purged(pworld: Any, driver: Driver) -> None:
    browser = Browser("application/json")
    callback = driver.callback_url(pworld, browser)
    pworld.sql("sessions", "UPDATE sessions SET expires_at = 0")
    assert_refused(browser.get(callback), "invalid_state", "invalid_signature", "session_required")
    assert pworld.count("sessions", "sessions") == 0


def test_session_rotates_on_connect_and_the_old_cookie_dies(pworld: Any, driver: Driver) -> None:
    browser = Browser("application/json")
    callback = driver.callback_url(pworld, browser)
    old = browser.cookie("session_id")
    assert old is not None
    response = browser.get(callback)
    assert response.status == 200
    new = browser.cookie("session_id")
    assert new is None or new.value != old.value
    stale = Browser("application/json").get(pworld.url + "/", headers={"Cookie": f"session_id={old.value}"})
    assert stale.json()["user_uuid"] is None


def test_logout_deletes_the_row_and_clears_the_cookie(make_world: Any) -> None:
    world = make_world(LINKD_PROVIDERS="example")
    browser = Browser("application/json")
    assert browser.follow(world.url + "/example/login").status == 200
    assert browser.get(world.url + "/").json()["user_uuid"]
    before = world.count("sessions", "sessions")
    refused = browser.post(world.url + "/logout")  # no XSRF token: refused
    assert refused.status == 403 and world.count("sessions", "sessions") == before
    response = browser.post(world.url + "/logout", headers=browser.xsrf_headers())
    assert response.status == 200
    assert "max-age=0" in session_cookie_header(response).lower()
    assert world.count("sessions", "sessions") == before - 1
    assert browser.get(world.url + "/").json()["user_uuid"] is None


# ---------------------------------------------------------------------------------- users
def test_reconnecting_keeps_the_uuid_and_a_foreign_account_is_409(make_world: Any) -> None:
    world = make_world(LINKD_PROVIDERS="example")
    fake = world.sandboxes["example"]
    alice, bob, alice_again = (
        Browser("application/json"),
        Browser("application/json"),
        Browser("application/json"),
    )
    fake.next_subject = "acct-1"
    first = alice.follow(world.url + "/example/login").json()["user_uuid"]
    fake.next_subject = "acct-2"
    second = bob.follow(world.url + "/example/login").json()["user_uuid"]
    assert first != second
    fake.next_subject = "acct-1"
    assert alice_again.follow(world.url + "/example/login").json()["user_uuid"] == first
    links, users = world.count("tokens", "connections"), world.count("tokens", "users")
    conflict = bob.follow(world.url + "/example/login")
    assert conflict.status == 409 and conflict.json()["error"] == "account_conflict"
    assert (world.count("tokens", "connections"), world.count("tokens", "users")) == (links, users)


# ---------------------------------------------------------------------------------- at rest
def test_no_token_or_uuid_in_any_database_file(pworld: Any, driver: Driver) -> None:
    browser = Browser("application/json")
    uuid = driver.connect(pworld, browser).json()["user_uuid"]
    secrets_ = [*driver.secrets(pworld), uuid]
    files = pworld.db_files()
    assert any(f.name.endswith("-wal") for f in files)
    for path in files:
        data = path.read_bytes()
        for secret in secrets_:
            assert secret.encode() not in data, f"{secret[:6]}… found in {path.name}"


def test_wal_mode_and_private_files(pworld: Any, driver: Driver) -> None:
    driver.connect(pworld, Browser("application/json"))
    for db in ("sessions", "tokens"):
        assert pworld.sql(db, "PRAGMA journal_mode")[0][0] == "wal"
    assert stat.S_IMODE(pworld.data_dir.stat().st_mode) == 0o700
    for path in pworld.db_files():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


# ---------------------------------------------------------------------------------- redirects
def test_redirect_uri_is_the_configured_one_whatever_the_request_says(pworld: Any, driver: Driver) -> None:
    """R1: Host, X-Forwarded-* and a redirect_uri parameter change nothing in the authorize URL."""
    browser = Browser("application/json")
    driver.prepare(pworld, browser)
    hostile = {
        "Host": "evil.example",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-For": "203.0.113.9",
    }
    separator = "&" if "?" in driver.login_path else "?"
    login = browser.get(
        driver.login_url(pworld) + separator + "redirect_uri=https%3A%2F%2Fevil.example%2Fcb", headers=hostile
    )
    assert login.status == 302, login.text
    expected = pworld.services.registry.get(driver.name).context.redirect_uri
    assert expected == f"{pworld.url}/{driver.name}/callback"
    assert query_of(login.location)["redirect_uri"] == expected
    assert "evil.example" not in login.location
