"""SECURITY.md T1 and T2: after every flow, failures included, at DEBUG, no secret is anywhere.

One `linkd serve` (two workers, `LINKD_LOG_LEVEL=DEBUG`, stderr to a file) goes through
everything a deployment sees: Shopify then Facebook in one browser, the example plugin
(PKCE, with tokens short enough to be refreshed and rotated on the next API read), a
Shopify re-connect, declined consents, platform errors (500, garbage), a tampered HMAC,
a forged state, a replayed callback, webhooks good and bad for both platforms, the
data-deletion status page, API reads, an API disconnect (revocation) and a logout.

Then every secret the fakes and the test minted — access and refresh tokens, codes,
client secrets, the master secret, the API token, PKCE verifiers — is searched raw,
URL-encoded, base64 (every alignment) and hex in:

- every response linkd gave (status line, headers, body), except the body of
  `GET /api/v1/connections/{id}/token`, the one place a token leaves linkd by design;
- every log line;
- `/proc/<pid>/environ` and `/proc/<pid>/cmdline` of the supervisor and both workers;
- every database file, `-wal` and `-shm` included, while running and after the stop.

States, session cookies, Shopify HMACs and signed_requests travel in URLs and cookies by
design, so they are searched everywhere but the responses. Zero hits are allowed.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

import pytest

from ..browser import Browser, Response
from ..flows import to_callback, with_query
from .conftest import Fakes, Launcher, Linkd, serve_fakes
from .leaks import Needles

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
SHOP = "leaky"


class Recorder:
    """Browsers whose every exchange with linkd is kept; the test's own secrets-in-transit too."""

    def __init__(self, daemon: Linkd) -> None:
        self.daemon = daemon
        self.browsers: list[Browser] = []
        self.in_transit: set[str] = set()  # states, cookies, HMACs: in URLs and cookies by design

    def browser(self, accept: str = "application/json") -> Browser:
        browser = Browser(accept)
        self.browsers.append(browser)
        return browser

    def to_callback(self, browser: Browser, login_path: str) -> str:
        callback = to_callback(browser, self.daemon.url + login_path)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(callback).query)
        self.in_transit.update(v for k in ("state", "hmac", "code") for v in query.get(k, []))
        return callback

    def connect(self, browser: Browser, login_path: str) -> Response:
        return browser.get(self.to_callback(browser, login_path))

    def responses(self) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """Every response linkd gave, as bytes; and apart, the API's token bodies (see the docstring)."""
        found: dict[str, bytes] = {}
        token_bodies: dict[str, bytes] = {}
        for b, browser in enumerate(self.browsers):
            for i, r in enumerate(browser.log):
                if not r.url.startswith(self.daemon.url):
                    continue  # the fake platform's own answers (its redirect carries the code)
                name = f"response {b}.{i} {urllib.parse.urlsplit(r.url).path}"
                head = f"{r.status}\n" + "".join(f"{k}: {v}\n" for k, v in r.headers.items())
                if re.search(r"/api/v1/connections/\d+/token$", r.url):
                    token_bodies[name] = r.body
                    found[name] = head.encode()
                else:
                    found[name] = head.encode() + r.body
        for browser in self.browsers:
            for cookie in browser.jar:
                self.in_transit.add(cookie.value or "")
        return found, token_bodies


def test_no_secret_in_responses_logs_proc_or_database_files(linkd: Launcher, tmp_path: Path) -> None:
    fakes = serve_fakes()
    try:
        fakes.example.expires_in = 60  # inside the 5-minute refresh margin: the API read refreshes
        fakes.shopify.access_ttl = 120
        daemon = linkd(fakes, LINKD_LOG_LEVEL="DEBUG")
        rec = Recorder(daemon)
        run_everything(rec, daemon, fakes)
        live_files = {f"{p.name} (running)": p.read_bytes() for p in daemon.db_files()}
        proc = proc_files(daemon)
        assert daemon.stop() == 0
        stopped_files = {f"{p.name} (stopped)": p.read_bytes() for p in daemon.db_files()}
        log_lines = daemon.log().splitlines()
        responses, token_bodies = rec.responses()
    finally:
        fakes.server.stop()

    secrets = Needles()
    secrets.add("platform secret, code or token", fakes.secrets())
    secrets.add("PKCE verifier", fakes.verifiers())
    secrets.add("master secret", [daemon.secret])
    secrets.add("API token", [daemon.api_token])
    in_transit = Needles()
    in_transit.add("state, cookie, HMAC or signed_request", rec.in_transit)

    assert len(fakes.verifiers()) >= 2 and len(fakes.secrets()) > 20, "the run minted too little"
    assert any(r.get("grant_type") == "refresh_token" for r in fakes.example.token_requests), "no refresh"
    assert fakes.example.revoked, "the disconnect revoked nothing"
    # the search finds what is there: the API's token answers, and the env file, hold secrets by design
    assert all(secrets.search(body) for body in token_bodies.values()) and len(token_bodies) == 2
    assert "master secret (raw)" in secrets.search(daemon.env_file.read_bytes())
    assert len(log_lines) > 50 and any("level=DEBUG" in line for line in log_lines)
    logs = {f"log line {i}": line.encode() for i, line in enumerate(log_lines)}
    everywhere_but_responses = {**logs, **proc, **live_files, **stopped_files}
    hits = {
        **secrets.search_all(responses),
        **secrets.search_all(everywhere_but_responses),
        **in_transit.search_all(everywhere_but_responses),
    }
    artefacts = len(responses) + len(everywhere_but_responses)
    print(
        f"leak scan: {len(responses)} responses, {len(logs)} log lines, {len(proc)} /proc files, "
        f"{len(live_files) + len(stopped_files)} database files (running and stopped) "
        f"= {artefacts} artefacts; "
        f"{len(secrets.secrets)} secrets + {len(in_transit.secrets)} in-transit values, "
        f"{len(secrets) + len(in_transit)} needles (raw, URL-encoded, base64, hex); {len(hits)} hits"
    )
    assert not hits, {name: found for name, found in list(hits.items())[:10]}


def run_everything(rec: Recorder, daemon: Linkd, fakes: Fakes) -> None:
    """Every flow, its failures, webhooks, API calls and a logout; each answer checked on the way."""
    url = daemon.url
    # successes: Shopify then Facebook in one browser, the example plugin, a Shopify re-connect
    home = rec.browser()
    assert rec.connect(home, f"/shopify/login?shop={SHOP}").status == 200
    assert rec.connect(home, "/facebook/login").status == 200
    assert rec.connect(rec.browser("text/html"), "/example/login").status == 200
    assert rec.connect(rec.browser(), f"/shopify/login?shop={SHOP}").status == 200

    # failures: declined, platform errors, tampering, forgery, replay
    fakes.example.deny_next = True
    assert rec.connect(rec.browser("text/html"), "/example/login").status == 400
    fakes.example.failures["token"] = ["500", "garbage", "invalid_grant"]
    for accept in ("text/html", "application/json", "text/html"):
        assert rec.connect(rec.browser(accept), "/example/login").status == 502
    fakes.shopify.fail_next("access_token", "garbage")
    assert rec.connect(rec.browser(), "/shopify/login?shop=other").status == 502
    browser = rec.browser()
    callback = rec.to_callback(browser, "/shopify/login?shop=other")
    assert browser.get(callback + "&extra=1").status == 400  # the HMAC no longer matches
    browser = rec.browser("text/html")
    callback = rec.to_callback(browser, "/example/login")
    assert browser.get(with_query(callback, state="A" * 43)).status == 400
    assert browser.get(callback).status == 200
    assert browser.get(callback).status == 400  # replayed
    fb = rec.browser()
    assert rec.connect(fb, f"/shopify/login?shop={SHOP}").status == 200
    fakes.facebook.fail("token", "500")
    assert rec.connect(fb, "/facebook/login").status == 502
    assert rec.connect(fb, f"/shopify/login?shop={SHOP}").status == 200
    fakes.facebook.fail("accounts", "garbage")
    assert rec.connect(fb, "/facebook/login").status == 502

    # webhooks, good and bad
    hook = rec.browser()
    headers, body = fakes.shopify.signed_webhook("customers/data_request", f"{SHOP}.myshopify.com")
    assert hook.post(url + "/shopify/webhook", body, headers=headers).status == 200
    headers, body = fakes.shopify.signed_webhook("customers/redact", f"{SHOP}.myshopify.com", secret="wrong")
    assert hook.post(url + "/shopify/webhook", body, headers=headers).status == 401
    signed = fakes.facebook.signed_request()
    rec.in_transit.add(signed)
    form = {"signed_request": signed}
    deletion = hook.post(url + "/facebook/webhook/data-deletion", form)
    assert deletion.status == 200, deletion.text
    status_url = deletion.json()["url"]
    assert rec.browser("text/html").get(status_url).status == 200
    bad = {"signed_request": fakes.facebook.signed_request(secret="not-the-app-secret")}
    assert hook.post(url + "/facebook/webhook/deauthorize", bad).status in (400, 401)

    # the API: lists, token reads (refreshing the example's and Shopify's tokens), a disconnect
    api = rec.browser()
    auth = {"Authorization": f"Bearer {daemon.api_token}"}
    listed = api.get(url + "/api/v1/connections", headers=auth)
    assert listed.status == 200
    ids = {(c["provider"], c["kind"]): c["id"] for c in listed.json()["connections"]}
    for key in (("example", "account"), ("shopify", "shop")):
        assert api.get(url + f"/api/v1/connections/{ids[key]}/token", headers=auth).status == 200
    assert api.get(url + "/api/v1/connections", headers={"Authorization": "Bearer wrong"}).status == 401
    assert (
        api.request("DELETE", url + f"/api/v1/connections/{ids[('example', 'account')]}", headers=auth).status
        == 200
    )
    headers, body = fakes.shopify.signed_webhook("app/uninstalled", f"{SHOP}.myshopify.com")
    assert hook.post(url + "/shopify/webhook", body, headers=headers).status == 200

    # a logout, with the XSRF token a page gave
    out = rec.browser()
    assert rec.connect(out, "/example/login").status == 200
    assert out.get(url + "/").status == 200
    assert out.post(url + "/logout", b"", headers=out.xsrf_headers()).status == 200


def proc_files(daemon: Linkd) -> dict[str, bytes]:
    found = {}
    for pid in daemon.pids():
        for name in ("environ", "cmdline"):
            found[f"/proc/{pid}/{name}"] = Path(f"/proc/{pid}/{name}").read_bytes()
    assert len(found) == 6
    return found
