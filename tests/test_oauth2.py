"""The generic OAuth 2.0 provider and the platforms declared in TOML files (providers/oauth2.py).

End to end over real HTTP: a definition file is written into a temporary
`LINKD_PROVIDERS_DIR`, linkd runs with the generic fake of that definition mounted under
`/_sandbox/{name}`, and a browser goes login → consent → callback, for each
client-authentication method with and without PKCE; then the token manager refreshes and
the provider revokes. Then every kind of bad file: its message (file, key, what is wrong)
in the registry, `linkd providers` and `linkd check`, while the other providers keep working.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import linkd.service
import providers.oauth2 as oauth2
from linkd import cli, hookimpl
from linkd.config import settings_from_env
from linkd.crypto import pkce_pair, random_token
from linkd.errors import ReconnectRequired
from linkd.plugins import get_plugin_manager
from linkd.registry import Registry
from providers.oauth2 import OAuth2Provider, load_definitions, pointer_tokens, resolve_pointer

from . import conftest
from .browser import Browser
from .servers import serve_handlers

ROOT = Path(__file__).resolve().parent.parent
SECRET = random_token(48)

DEFINITION = """\
title = "Acme"
authorize_url = "https://auth.acme.test/oauth/authorize"
token_url = "https://auth.acme.test/oauth/token"
userinfo_url = "https://api.acme.test/v1/me"
revoke_url = "https://auth.acme.test/oauth/revoke"
scopes = ["read", "write"]
account_id_pointer = "/data/id"
account_name_pointer = "/data/display~1name"
rotates_refresh_tokens = true
"""

HINTED = """\
authorize_url = "https://{tenant}.acme.test/oauth/authorize"
token_url = "https://{tenant}.acme.test/oauth/token"
userinfo_url = "https://{tenant}.acme.test/api/me"
account_hint = "tenant"
hint_pattern = "[a-z][a-z0-9-]{1,30}"
hint_query = "tenant"
"""

GOOD = """\
authorize_url = "https://auth.good.test/authorize"
token_url = "https://auth.good.test/token"
userinfo_url = "https://auth.good.test/me"
"""


def plugin_manager(*plugins: Any, entry_points: bool = True) -> Any:
    """linkd's plugin manager with the TOML plugin registered (by hand until setup.py names it)."""
    pm = get_plugin_manager(load_entry_points=entry_points)
    for plugin in (oauth2, *plugins):
        if not pm.is_registered(plugin):
            pm.register(plugin)
    return pm


@pytest.fixture
def declared(make_world: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A running linkd whose providers dir holds the given definition files (name → TOML text)."""
    directory = tmp_path / "providers.d"
    directory.mkdir()

    def make(files: dict[str, str], **env: str) -> Any:
        for name, text in files.items():
            (directory / name).write_text(text, encoding="utf-8")
        monkeypatch.setattr(conftest, "get_plugin_manager", plugin_manager)
        return make_world(LINKD_PROVIDERS_DIR=str(directory), **env)

    return make


def query(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


# ------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("pkce", [True, False], ids=["pkce", "no-pkce"])
@pytest.mark.parametrize("client_auth", ["client_secret_post", "client_secret_basic"])
def test_declared_provider_connects_refreshes_and_revokes(
    declared: Any, client_auth: str, pkce: bool, caplog: pytest.LogCaptureFixture
) -> None:
    extra = f'client_auth = "{client_auth}"\npkce = {str(pkce).lower()}\n'
    world = declared({"acme.toml": DEFINITION + extra}, LINKD_PROVIDERS="acme")
    fake = world.sandboxes["acme"]
    browser = Browser("application/json")

    login = browser.get(world.url + "/acme/login")
    assert login.status == 302
    assert urllib.parse.urlsplit(login.location).path == "/_sandbox/acme/oauth/authorize"
    sent = query(login.location)
    assert sent["client_id"] == fake.client_id and sent["scope"] == "read write"
    assert sent["redirect_uri"] == world.url + "/acme/callback"
    assert ("code_challenge" in sent) is pkce and sent.get("code_challenge_method", "S256") == "S256"

    done = browser.follow(login.location)
    assert done.status == 200, done.text
    assert done.json()["accounts"] == [{"id": "user-1", "name": "Acme user-1", "kind": "account"}]
    assert not any(value in done.text for value in fake.minted)
    [exchange] = fake.token_requests
    assert ("client_secret" in exchange) is (client_auth == "client_secret_post")
    assert ("code_verifier" in exchange) is pkce

    services = world.services
    row = world.run(lambda: services.store.get_connection(1))
    first = services.tokens.open(row)
    assert first.refresh_token and first.expires_at
    _, fresh = world.run(lambda: services.tokens.usable(row.id, force=True))
    assert fresh.access_token != first.access_token and fresh.refresh_token != first.refresh_token
    assert fake.counts["token"] == 2
    provider = services.registry.get("acme")
    with pytest.raises(ReconnectRequired):  # rotation: the spent refresh token is refused
        world.run(lambda: provider.refresh(row.account_id, first))

    world.run(lambda: provider.revoke(row.account_id, fresh))
    assert fake.revoked == [fresh.refresh_token] and fresh.access_token not in fake.access
    assert "revocation failed" not in caplog.text
    with pytest.raises(ReconnectRequired):
        world.run(lambda: services.tokens.usable(row.id, force=True))
    assert world.run(lambda: services.store.get_connection(row.id)).status == "reconnect"


def test_account_from_the_token_answer_and_a_refresh_token_that_does_not_rotate(declared: Any) -> None:
    definition = DEFINITION.replace('userinfo_url = "https://api.acme.test/v1/me"\n', "").replace(
        "rotates_refresh_tokens = true", 'rotates_refresh_tokens = false\nscope_separator = ","'
    )
    world = declared({"acme.toml": definition}, LINKD_PROVIDERS="acme")
    fake = world.sandboxes["acme"]
    browser = Browser("application/json")
    assert query(browser.get(world.url + "/acme/login").location)["scope"] == "read,write"
    done = Browser("application/json").follow(world.url + "/acme/login")
    assert done.status == 200 and done.json()["accounts"][0]["id"] == "user-1"
    assert "userinfo" not in fake.counts
    row = world.run(lambda: world.services.store.get_connection(1))
    first = world.services.tokens.open(row)
    for _ in range(2):
        _, fresh = world.run(lambda: world.services.tokens.usable(row.id, force=True))
        assert fresh.refresh_token == first.refresh_token  # kept when the answer carries none
    assert set(first.scopes) == {"read", "write"}


@pytest.mark.parametrize(
    ("where", "mode"),
    [("token", "500"), ("token", "error_200"), ("token", "garbage"), ("userinfo", "garbage")],
)
def test_platform_trouble_ends_the_connect_cleanly_with_nothing_stored(
    declared: Any, where: str, mode: str
) -> None:
    world = declared({"acme.toml": DEFINITION}, LINKD_PROVIDERS="acme")
    world.sandboxes["acme"].failures[where] = [mode]
    response = Browser("application/json").follow(world.url + "/acme/login")
    assert response.status == 502 and response.json()["error"] == "provider_error"
    assert world.count("tokens", "connections") == 0
    assert not any(value in response.text for value in world.sandboxes["acme"].minted)


def test_denied_consent_consumes_the_state_and_shows_no_markup(declared: Any) -> None:
    world = declared({"acme.toml": DEFINITION}, LINKD_PROVIDERS="acme")
    world.sandboxes["acme"].deny_next = True
    response = Browser("text/html").follow(world.url + "/acme/login")
    assert response.status == 400 and "<b>no</b>" not in response.text
    assert world.count("sessions", "states") == 0 and world.sandboxes["acme"].counts.get("token") is None


# ---------------------------------------------------------------------------------- account hints
def test_account_hint_comes_from_the_path_or_the_query_and_picks_the_host(declared: Any) -> None:
    world = declared({"acme.toml": HINTED}, LINKD_PROVIDERS="acme")
    done = Browser("application/json").follow(world.url + "/acme/globex/login")
    assert done.status == 200, done.text
    assert done.json()["accounts"][0]["id"] == "globex:user-1"
    login = Browser("application/json").get(world.url + "/acme/login?tenant=initech")
    assert urllib.parse.urlsplit(login.location).path == "/_sandbox/acme/initech/oauth/authorize"
    row = world.run(lambda: world.services.store.get_connection(1))
    _, fresh = world.run(lambda: world.services.tokens.usable(row.id, force=True))  # the stored tenant's host
    assert fresh.extra == {"account_hint": "globex"}


@pytest.mark.parametrize(
    "path",
    [
        "/acme/login",  # no hint at all
        "/acme/globex/login?tenant=initech",  # two that differ
        "/acme/login?tenant=Globex",
        "/acme/login?tenant=evil.com%2Fx",
        "/acme/login?tenant=g%40evil.com",
        "/acme/login?tenant=globex.evil.com",
        "/acme/login?tenant=-globex",
        "/acme/login?tenant=%EF%BD%87lobex",  # fullwidth g
        "/acme/login?tenant=" + "g" * 40,
        "/acme/login?tenant=globex&tenant=initech",
        "/acme/evil.com/login",
        "/acme/x..y/login",
    ],
)
def test_a_bad_account_hint_is_refused_before_any_redirect(declared: Any, path: str) -> None:
    world = declared({"acme.toml": HINTED}, LINKD_PROVIDERS="acme")
    response = Browser("application/json").get(world.url + path)
    assert response.status == 400, (response.status, response.text)
    assert response.headers.get("Location") is None and world.count("sessions", "states") == 0


# ------------------------------------------------------------------------------------- bad files
BAD_FILES = {
    "unknown.toml": (
        GOOD + 'tokn_url = "https://auth.good.test/t"\n',
        "unknown key 'tokn_url' (did you mean",
    ),
    "named.toml": (GOOD + 'name = "other"\n', "unknown key 'name' (the provider's name is the file's name)"),
    "missing.toml": ('authorize_url = "https://auth.good.test/authorize"\n', "key 'token_url' is missing"),
    "plainhttp.toml": (
        GOOD.replace("https://auth.good.test/token", "http://auth.good.test/token"),
        "key 'token_url' must be an https:// URL (http:// is accepted for a loopback host only)",
    ),
    "nopattern.toml": (
        GOOD.replace("auth.good.test/authorize", "{shop}.good.test/authorize") + 'account_hint = "shop"\n',
        "key 'hint_pattern' is missing",
    ),
    "nohint.toml": (
        GOOD.replace("auth.good.test/authorize", "{shop}.good.test/authorize"),
        "key 'authorize_url' uses {shop}, but the file declares no account_hint",
    ),
    "badtoml.toml": (GOOD + 'scopes = ["a"\n', "invalid TOML: "),
    "badpointer.toml": (
        GOOD + 'account_id_pointer = "id"\n',
        "key 'account_id_pointer' must be a JSON pointer",
    ),
    "badauth.toml": (
        GOOD + 'client_auth = "private_key_jwt"\n',
        "key 'client_auth' must be 'client_secret_post' or 'client_secret_basic'",
    ),
    "reserved.toml": (
        GOOD + '[authorize_params]\nstate = "fixed"\n',
        "key 'authorize_params' must not set state",
    ),
    "badregex.toml": (
        GOOD.replace("auth.good.test/authorize", "{shop}.good.test/authorize")
        + 'account_hint = "shop"\nhint_pattern = "[a-z"\n',
        "key 'hint_pattern' is not a valid regular expression",
    ),
    "Bad Name.toml": (GOOD, "the file name must be a provider name"),
    "api.toml": (GOOD, "the file name must be a provider name"),
}
STAND_IN = {"Bad Name.toml": "bad-name-toml", "api.toml": "api-toml"}


def registry_for(directory: Path, pm: Any, **env: str) -> Registry:
    settings = settings_from_env(
        {"STATE_TOKEN_SECRET": SECRET, "LINKD_PROVIDERS_DIR": str(directory), **env}, require_secret=False
    )
    return Registry.discover(pm, settings)


@pytest.mark.parametrize("filename", sorted(BAD_FILES))
def test_each_bad_file_says_what_is_wrong_and_the_others_keep_working(tmp_path: Path, filename: str) -> None:
    text, message = BAD_FILES[filename]
    (tmp_path / "good.toml").write_text(GOOD)
    (tmp_path / filename).write_text(text)
    pm = plugin_manager(entry_points=False)
    registry = registry_for(tmp_path, pm, GOOD_CLIENT_ID="cid-1", GOOD_CLIENT_SECRET="s3cr3t-value")
    assert registry.entries["good"].enabled and registry.entries["good"].problems == []
    entry = registry.entries[STAND_IN.get(filename, filename.removesuffix(".toml"))]
    assert not entry.enabled
    assert len(entry.problems) == 1 and entry.problems[0].startswith(f"{tmp_path / filename}: {message}")


def test_every_problem_of_a_file_is_listed_at_once(tmp_path: Path) -> None:
    path = tmp_path / "many.toml"
    path.write_text('authorize_url = "ftp://x"\npkce = "yes"\nscope = "a b"\n')
    registry = registry_for(tmp_path, plugin_manager(entry_points=False))
    assert registry.entries["many"].problems == [
        f"{path}: unknown key 'scope' (did you mean 'scopes'?)",
        f"{path}: key 'token_url' is missing",
        f"{path}: key 'authorize_url' must be an https:// URL (http:// is accepted for a loopback host only)",
        f"{path}: key 'pkce' must be true or false",
    ]


def test_a_loopback_http_url_and_the_shipped_examples_are_valid(tmp_path: Path) -> None:
    (tmp_path / "local.toml").write_text(GOOD.replace("https://auth.good.test", "http://127.0.0.1:8080"))
    for cls in [*load_definitions(tmp_path), *load_definitions(ROOT / "conf" / "providers.d")]:
        assert issubclass(cls, OAuth2Provider), cls.setting_problems({})
    names = {c.name for c in load_definitions(ROOT / "conf" / "providers.d")}
    assert {"github", "google", "slack"} <= names


class CodeAcme(OAuth2Provider):
    name = "acme"
    authorize_url = "https://code.acme.test/authorize"
    token_url = "https://code.acme.test/token"


class CodePlugin:
    @hookimpl
    def register_providers(self, register: Any) -> None:
        register(CodeAcme)


@pytest.mark.parametrize("code_first", [True, False], ids=["code-registered-first", "code-registered-last"])
def test_a_name_taken_by_a_code_plugin_keeps_the_code_and_reports_the_file(
    tmp_path: Path, code_first: bool
) -> None:
    (tmp_path / "acme.toml").write_text(DEFINITION)
    (tmp_path / "good.toml").write_text(GOOD)
    pm = get_plugin_manager(load_entry_points=False)
    for plugin in (CodePlugin(), oauth2) if code_first else (oauth2, CodePlugin()):
        pm.register(plugin)
    registry = registry_for(tmp_path, pm)
    assert registry.entries["acme"].cls is CodeAcme
    assert registry.entries["acme-toml"].problems == [
        f"{tmp_path / 'acme.toml'}: the name 'acme' is taken by a code plugin; this file is ignored"
    ]
    assert "good" in registry.entries and not registry.entries["acme-toml"].enabled


def test_linkd_providers_and_check_report_bad_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "providers.d"
    directory.mkdir()
    (directory / "good.toml").write_text(GOOD)
    (directory / "broken.toml").write_text('authorize_url = "https://auth.good.test/authorize"\n')
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "STATE_TOKEN_SECRET": SECRET,
        "LINKD_PROVIDERS_DIR": str(directory),
        "GOOD_CLIENT_ID": "cid-1",
        "GOOD_CLIENT_SECRET": "s3cr3t-value",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LINKD_PROVIDERS", raising=False)
    monkeypatch.setattr(linkd.service, "get_plugin_manager", lambda: plugin_manager(entry_points=False))

    assert cli.main(["providers", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["good"]["enabled"] and rows["good"]["missing"] == []
    assert not rows["broken"]["enabled"]
    assert rows["broken"]["missing"] == [f"{directory / 'broken.toml'}: key 'token_url' is missing"]

    assert cli.main(["check"]) == 0  # a broken file that nobody asked for does not stop linkd
    capsys.readouterr()
    monkeypatch.setenv("LINKD_PROVIDERS", "good,broken")
    assert cli.main(["check"]) == 2
    assert (
        f"{directory / 'broken.toml'}: key 'token_url' is missing (provider broken)"
        in capsys.readouterr().err
    )


def test_endpoints_the_fake_cannot_tell_apart_give_no_sandbox_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "same.toml").write_text(GOOD.replace("auth.good.test/me", "api.good.test/authorize"))
    [cls] = load_definitions(tmp_path)
    assert cls.setting_problems({"SAME_CLIENT_ID": "cid-1", "SAME_CLIENT_SECRET": "s3cr3t-value"}) == []
    assert cls.sandbox("http://127.0.0.1:1") is None


def test_a_missing_directory_declares_nothing(tmp_path: Path) -> None:
    assert load_definitions(tmp_path / "nope") == []
    registry = registry_for(tmp_path / "nope", plugin_manager(entry_points=False))
    assert not any(getattr(e.cls, "definition_file", None) for e in registry.entries.values())


# ----------------------------------------------------------------------------- the smallest plugin
def test_the_example_plugin_is_a_complete_provider_in_under_60_lines(
    make_world: Any, monkeypatch: Any
) -> None:
    path = ROOT / "tests" / "example_plugin" / "linkd_example.py"
    assert len(path.read_text().splitlines()) < 60
    spec = importlib.util.spec_from_file_location("linkd_example_source", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(conftest, "get_plugin_manager", lambda: plugin_manager(module, entry_points=False))
    world = make_world(LINKD_PROVIDERS="example")
    assert {s.name for s in module.ExampleProvider.settings} >= {
        "EXAMPLE_CLIENT_ID",
        "EXAMPLE_CLIENT_SECRET",
        "EXAMPLE_BASE_URL",
    }
    fake = world.sandboxes["example"]
    fake.next_subject = "acct-7"
    done = Browser("application/json").follow(world.url + "/example/login")
    assert done.status == 200 and done.json()["accounts"][0] == {
        "id": "acct-7",
        "name": "Example acct-7",
        "kind": "account",
    }
    assert fake.counts == {"authorize": 1, "token": 1, "userinfo": 1}
    assert fake.token_requests[0]["code_verifier"]


# ----------------------------------------------------------------------------------- the pieces
def test_json_pointers_follow_rfc_6901() -> None:
    document = {"foo": ["bar", "baz"], "": 0, "a/b": 1, "m~n": 8, "n": {"id": 7}}
    assert resolve_pointer(document, "") == document
    assert resolve_pointer(document, "/foo/1") == "baz"
    assert resolve_pointer(document, "/") == 0
    assert resolve_pointer(document, "/a~1b") == 1
    assert resolve_pointer(document, "/m~0n") == 8
    assert resolve_pointer(document, "/n/id") == 7
    for missing in ("/foo/2", "/foo/01", "/foo/-", "/nope", "/n/id/x"):
        with pytest.raises(KeyError):
            resolve_pointer(document, missing)
    assert pointer_tokens("id") is None and pointer_tokens("/~2") is None


def _post(url: str, form: dict[str, str], headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, urllib.parse.urlencode(form).encode(), headers or {}, method="POST")
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _authorize(base: str, fake: Any, redirect_uri: str, challenge: str) -> str:
    params = {
        "response_type": "code",
        "client_id": fake.client_id,
        "redirect_uri": redirect_uri,
        "state": "s",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    opener = urllib.request.build_opener(_NoRedirect())
    try:
        opener.open(f"{base}/oauth/authorize?{urllib.parse.urlencode(params)}", timeout=10)
    except urllib.error.HTTPError as err:
        assert err.code == 302
        return query(err.headers["Location"])["code"]
    raise AssertionError("the fake did not redirect")


def test_the_fake_is_as_strict_as_a_real_server(tmp_path: Path) -> None:
    (tmp_path / "acme.toml").write_text(DEFINITION + 'client_auth = "client_secret_basic"\n')
    [cls] = load_definitions(tmp_path)
    sandbox = cls.sandbox("http://placeholder")
    assert sandbox is not None
    fake = sandbox.state
    server = serve_handlers(sandbox.handlers)
    try:
        verifier, challenge = pkce_pair()
        redirect = "https://linkd.test/acme/callback"
        basic = "Basic " + base64.b64encode(f"{fake.client_id}:{fake.client_secret}".encode()).decode()
        token = f"{server.url}/oauth/token"

        def exchange(code: str, **changes: str) -> tuple[int, Any]:
            form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect}
            form["code_verifier"] = verifier
            headers = {"Authorization": changes.pop("authorization", basic)}
            return _post(token, {**form, **changes}, headers)

        code = _authorize(server.url, fake, redirect, challenge)
        secret_in_body = {"client_id": fake.client_id, "client_secret": fake.client_secret}
        assert exchange(code, authorization="", **secret_in_body)[0] == 401  # registered for basic
        code = _authorize(server.url, fake, redirect, challenge)
        assert exchange(code, redirect_uri=redirect + "/")[1] == {"error": "invalid_grant"}
        assert exchange(code)[1] == {"error": "invalid_grant"}  # spent by the failed attempt
        code = _authorize(server.url, fake, redirect, challenge)
        assert exchange(code, code_verifier=pkce_pair()[0])[1] == {"error": "invalid_grant"}
        code = _authorize(server.url, fake, redirect, challenge)
        status, answer = exchange(code)
        assert status == 200 and answer["refresh_token"] in fake.minted
        assert exchange(code)[1] == {"error": "invalid_grant"}  # single use
        digest = hashlib.sha256(verifier.encode()).digest()
        assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == challenge
    finally:
        server.stop()
