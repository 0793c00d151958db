"""A newcomer's first minutes, in a real headless Chromium, against `linkd demo`.

Debian's Chromium (`/usr/bin/chromium`) driven by Playwright for Python; nothing is
downloaded at test time. The person types a shop, approves on the sandbox Shopify page,
connects Facebook, sees their Pages, manages and disconnects accounts, logs out; the
failures real OAuth flows meet most (lost cookies, a used or expired state, a cancelled
consent) end on a page that starts the flow again. The cookie attributes are read from
what the browser stored, and the `SameSite=Lax` session cookie is shown to survive a
real cross-site return (sandbox on `localhost`, linkd on `127.0.0.1`). Screenshots of the
key pages go to `tests/artifacts/`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from linkd.demo import sandbox_settings
from linkd.plugins import get_plugin_manager
from linkd.service import build_services
from linkd.web import make_app

from .browser import Browser
from .servers import ServerThread, free_port
from .test_demo import Demo, kill, start_demo

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "Chromium is not installed: `apt-get install chromium` (the browser test drives /usr/bin/chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is missing: pip install -e '.[test]'"
)

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    running = start_demo("--data-dir", str(tmp_path_factory.mktemp("demo") / "data"))
    yield running
    if running.proc.poll() is None:
        try:
            assert running.interrupt() == 0, running.output
        finally:
            kill(running)


class Visit:
    """A browser context (its own cookie jar) and page, watching what the page loads and logs."""

    def __init__(self, chromium: Any, origin: str) -> None:
        self.origin = origin
        self.context = chromium.new_context(viewport={"width": 1100, "height": 800})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.console: list[str] = []
        self.set_cookies: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        self.page.on("response", self._response)

    def _response(self, response: Any) -> None:
        for header in response.headers_array():
            if header["name"].lower() == "set-cookie":
                self.set_cookies.extend(header["value"].split("\n"))

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def text(self) -> str:
        return str(self.page.inner_text("body"))

    def cookie(self, name: str) -> dict[str, Any] | None:
        return next((c for c in self.context.cookies() if c["name"] == name), None)

    def button(self, name: str) -> Any:
        return self.page.get_by_role("button", name=name)

    def connect_shop(self, shop: str) -> None:
        """From linkd's start page: type the shop, press Connect Shopify, land on the consent page."""
        self.page.get_by_label("Shop").first.fill(shop)
        self.button("Connect Shopify").first.click()
        self.page.wait_for_url("**/_sandbox/shopify/**")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(chromium: Any, demo: Demo) -> Iterator[Visit]:
    v = Visit(chromium, demo.url)
    yield v
    v.close()
    third_party = [u for u in v.requests if not u.startswith(demo.url + "/")]
    assert not third_party, third_party  # every page, style and image comes from linkd itself
    assert not [m for m in v.console if "Content Security Policy" in m], v.console


def assert_page_headers(response: Any) -> None:
    headers = response.headers
    assert headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "script-src" not in headers["content-security-policy"]  # default-src 'none': no script at all
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-content-type-options"] == "nosniff"


def assert_accessible_basics(visit: Visit) -> None:
    page = visit.page
    assert page.get_attribute("html", "lang") == "en"
    assert page.locator("main").count() == 1 and page.locator("header").count() == 1
    assert page.locator("h1").count() == 1
    for field in page.locator("input:not([type=hidden])").all():  # every field has a label
        field_id = field.get_attribute("id")
        assert field_id and page.locator(f"label[for='{field_id}']").count() == 1


def test_newcomer_links_a_shop_and_facebook_then_manages_and_logs_out(visit: Visit, demo: Demo) -> None:
    page = visit.page
    response = page.goto(demo.url + "/")
    assert response is not None and response.status == 200
    assert_page_headers(response)
    assert_accessible_basics(visit)
    assert "No account is linked in this browser yet." in visit.text()
    visit.shot("01-start-page")

    # keyboard first: the skip link is the first stop and shows when focused; focus is visible
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to the content"
    assert page.locator("a.skip").bounding_box()["y"] >= 0
    field = page.get_by_label("Shop")
    field.focus()
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    field.type("acme")
    page.keyboard.press("Enter")  # submits the Shopify form

    page.wait_for_url("**/_sandbox/shopify/acme.myshopify.com/admin/oauth/authorize?**")
    assert "Install linkd?" in visit.text() and "read_products" in visit.text()
    visit.shot("02-shopify-consent")
    visit.button("Install app").click()

    page.wait_for_url(demo.url + "/shopify/callback?**")
    assert page.locator("h1").inner_text() == "Shopify connected"
    assert "Acme" in visit.text() and "What next?" in visit.text()
    visit.shot("03-shopify-connected")
    profile = page.locator(".uuid").inner_text()

    # the cookies as the browser stored them
    session = visit.cookie("session_id")
    assert session is not None
    assert session["httpOnly"] is True and session["sameSite"] == "Lax" and session["path"] == "/"
    assert session["domain"] == "127.0.0.1" and session["secure"] is False  # plain http on loopback
    assert time.time() < session["expires"] <= time.time() + 3600 + 5  # Max-Age = LINKD_SESSION_TTL
    issued = [c for c in visit.set_cookies if c.startswith("session_id=") and "Max-Age=0" not in c]
    assert issued and not [c for c in issued if "domain=" in c.lower()]  # host-only: no Domain attribute

    page.get_by_role("link", name="See all your linked accounts").click()
    shop_card = page.locator(".account[data-provider=shopify]")
    assert "Acme" in shop_card.inner_text() and "Connected" in shop_card.inner_text()
    assert profile in visit.text()
    visit.shot("04-start-page-with-shop")
    xsrf = visit.cookie("_xsrf")  # set with the first page that holds a form that POSTs
    assert xsrf is not None and xsrf["httpOnly"] is True and xsrf["sameSite"] == "Strict"

    visit.button("Connect Facebook").click()
    page.wait_for_url("**/_sandbox/facebook/**/dialog/oauth?**")
    assert "requesting access" in visit.text() and "Show a list of the Pages you manage" in visit.text()
    visit.shot("05-facebook-consent")
    page.get_by_role("button", name="Continue as").click()

    page.wait_for_url(demo.url + "/facebook/callback?**")
    assert page.locator("h1").inner_text() == "Facebook connected"
    done = visit.text()
    assert "Sandy Sandbox" in done and "Sandbox Coffee Roasters" in done and "Sandbox Bookshop" in done
    assert "This browser is now signed out" in done and profile in done
    visit.shot("06-facebook-connected-with-pages")
    assert visit.cookie("session_id") is None  # Facebook ends the browser session after its connect

    page.get_by_role("link", name="Back to the start page").click()
    assert "No account is linked in this browser yet." in visit.text()
    assert visit.button("Log out").count() == 0

    # connecting the same shop again brings the whole profile back to this browser
    visit.connect_shop("acme")
    visit.button("Install app").click()
    page.wait_for_url(demo.url + "/shopify/callback?**")
    page.goto(demo.url + "/")
    assert profile in visit.text()
    facebook_card = page.locator(".account[data-provider=facebook]")
    assert (
        "Sandy Sandbox" in facebook_card.inner_text()
        and "With access to 2 pages" in facebook_card.inner_text()
    )
    visit.shot("07-all-linked-accounts")

    # a connection whose grant is gone says so, and reconnects in one click
    with sqlite3.connect(Path(demo.data_dir) / "tokens.db") as db:
        db.execute("UPDATE connections SET status = 'reconnect' WHERE provider = 'shopify'")
    page.reload()
    assert "Needs reconnection" in shop_card.inner_text()
    visit.shot("08-needs-reconnection")
    visit.button("Reconnect Shopify").click()
    page.wait_for_url("**/_sandbox/shopify/acme.myshopify.com/**")
    visit.button("Install app").click()
    page.wait_for_url(demo.url + "/shopify/callback?**")
    page.goto(demo.url + "/")
    assert "Connected" in shop_card.inner_text() and "Needs reconnection" not in visit.text()

    audit_sql = "SELECT COUNT(*) FROM audit WHERE actor = 'browser' AND action = 'disconnect'"
    with sqlite3.connect(Path(demo.data_dir) / "tokens.db") as db:
        audited_before = db.execute(audit_sql).fetchone()[0]
    visit.button("Disconnect Sandy Sandbox").click()
    page.wait_for_url(demo.url + "/?notice=disconnected")
    assert page.get_by_role("status").inner_text().startswith("The account was disconnected")
    assert facebook_card.count() == 0 and "Sandbox Bookshop" not in visit.text()
    with sqlite3.connect(Path(demo.data_dir) / "tokens.db") as db:
        assert db.execute("SELECT COUNT(*) FROM connections WHERE provider = 'facebook'").fetchone()[0] == 0
        # the user and its two Pages, recorded as the browser's doing
        assert db.execute(audit_sql).fetchone()[0] == audited_before + 3
    visit.shot("09-after-disconnect")

    cookie_before_logout = visit.cookie("session_id")
    assert cookie_before_logout is not None
    visit.button("Log out").click()
    page.wait_for_url(demo.url + "/")
    assert "No account is linked in this browser yet." in visit.text()
    assert visit.cookie("session_id") is None
    visit.shot("10-logged-out")
    # server side too: the old cookie value names no session any more
    replay = Browser("application/json").get(
        demo.url + "/", headers={"Cookie": f"session_id={cookie_before_logout['value']}"}
    )
    assert replay.json()["user_uuid"] is None


def test_lost_cookies_used_states_and_cancelled_consents_offer_to_start_again(
    visit: Visit, demo: Demo
) -> None:
    page = visit.page
    page.goto(demo.url + "/")
    visit.connect_shop("globex")
    visit.context.clear_cookies()  # the browser lost its cookies while on the platform's page
    visit.button("Install app").click()

    page.wait_for_url(demo.url + "/shopify/callback?**")
    assert page.locator("h1").inner_text() == "This sign-in link has expired"
    assert page.get_by_role("alert").get_attribute("data-code") == "invalid_state"
    assert page.get_by_label("Shop").input_value() == "globex.myshopify.com"  # kept from the callback
    assert_accessible_basics(visit)
    visit.shot("11-lost-cookie-start-again")
    visit.button("Start again with Shopify").click()
    page.wait_for_url("**/_sandbox/shopify/globex.myshopify.com/**")
    visit.button("Install app").click()
    page.wait_for_url(demo.url + "/shopify/callback?**")
    assert page.locator("h1").inner_text() == "Shopify connected"

    used = page.url
    response = page.goto(used)  # the same callback again: its state was spent
    assert response is not None and response.status == 400
    assert page.get_by_role("alert").get_attribute("data-code") == "invalid_state"
    visit.button("Start again with Shopify").click()
    page.wait_for_url("**/_sandbox/shopify/globex.myshopify.com/**")

    visit.button("Cancel").click()  # the person changes their mind on the platform's page
    page.wait_for_url(demo.url + "/shopify/callback?**")
    assert page.locator("h1").inner_text() == "Nothing was connected"
    visit.shot("12-consent-cancelled")
    visit.button("Start again with Shopify").click()
    page.wait_for_url("**/_sandbox/shopify/globex.myshopify.com/**")


def test_facebook_first_explains_and_offers_the_platform_that_starts_a_profile(
    visit: Visit, demo: Demo
) -> None:
    page = visit.page
    page.goto(demo.url + "/")
    visit.button("Connect Facebook").click()
    assert page.locator("h1").inner_text() == "Connect another account first"
    assert "Connect Shopify" in page.get_by_role("alert").inner_text()
    visit.shot("13-facebook-needs-a-profile")
    page.get_by_label("Shop").fill("initech")
    visit.button("Connect Shopify").click()
    page.wait_for_url("**/_sandbox/shopify/initech.myshopify.com/**")


def test_disconnect_is_a_post_with_xsrf_for_this_browsers_own_connections_only(
    chromium: Any, visit: Visit, demo: Demo
) -> None:
    owner = visit
    owner.page.goto(demo.url + "/")
    owner.connect_shop("pied-piper")
    owner.button("Install app").click()
    owner.page.wait_for_url(demo.url + "/shopify/callback?**")
    with sqlite3.connect(Path(demo.data_dir) / "tokens.db") as db:
        (victim,) = db.execute(
            "SELECT id FROM connections WHERE account_id = 'pied-piper.myshopify.com'"
        ).fetchone()

    other = Visit(chromium, demo.url)
    try:
        other.page.goto(demo.url + "/")
        other.connect_shop("hooli")
        other.button("Install app").click()
        other.page.wait_for_url(demo.url + "/shopify/callback?**")
        other.page.goto(demo.url + "/")
        token = other.page.locator("input[name=_xsrf]").first.get_attribute("value")
        request = other.context.request
        target = f"{demo.url}/connections/{victim}/disconnect"

        refused = request.post(target, form={"_xsrf": token}, max_redirects=0)
        assert refused.status == 404  # someone else's connection does not exist for this browser
        forged = request.post(target, form={}, max_redirects=0)
        assert forged.status == 403 and "This form has expired" in forged.text()
        with sqlite3.connect(Path(demo.data_dir) / "tokens.db") as db:
            assert db.execute("SELECT COUNT(*) FROM connections WHERE id = ?", (victim,)).fetchone()[0] == 1

        (own,) = [c for c in other.page.locator(".account form.disconnect").all()]
        own_action = own.get_attribute("action")
        done = request.post(
            demo.url + str(own_action),
            form={"_xsrf": token},
            headers={"Accept": "application/json"},
            max_redirects=0,
        )
        assert done.status == 200 and len(done.json()["removed"]) == 1
    finally:
        other.close()
    owner.page.goto(demo.url + "/")
    assert "Pied Piper" in owner.page.locator(".account[data-provider=shopify]").inner_text()


def test_session_cookie_survives_the_cross_site_return_from_the_platform(
    chromium: Any, tmp_path: Path
) -> None:
    """linkd at http://127.0.0.1:P, the platforms at http://localhost:P: another site for cookies.

    The consent page's redirect back is a cross-site top-level GET: a `SameSite=Lax` cookie
    goes with it (the connect completes), a `Strict` one would not (the control run shows
    the state refused). linkd's cookies never reach the platform's site.
    """
    port = free_port()
    linkd_url, platform_url = f"http://127.0.0.1:{port}", f"http://localhost:{port}"
    pm = get_plugin_manager()
    settings, handlers, _ = sandbox_settings(
        linkd_url, str(tmp_path), pm, {"LINKD_PROVIDERS": "shopify,facebook"}, sandbox_url=platform_url
    )
    holder: dict[str, Any] = {}

    async def make() -> Any:
        holder["services"] = await build_services(settings, pm=pm)
        return make_app(holder["services"], handlers)

    server = ServerThread(make, port=port).start()
    visit = Visit(chromium, linkd_url)
    page = visit.page
    try:
        # control: the same trip with the session cookie made Strict is refused
        page.goto(linkd_url + "/")
        visit.connect_shop("umbrella")
        assert page.url.startswith(platform_url + "/_sandbox/shopify/")
        strict = dict(visit.cookie("session_id") or {})
        assert strict, "no session cookie after starting a connect"
        strict["sameSite"] = "Strict"
        visit.context.add_cookies([strict])
        visit.button("Install app").click()
        page.wait_for_url(linkd_url + "/shopify/callback?**")
        assert page.get_by_role("alert").get_attribute("data-code") == "invalid_state"

        # the real thing: linkd's own Lax cookie goes along with the cross-site redirect back
        visit.context.clear_cookies()
        visit.button("Start again with Shopify").click()
        page.wait_for_url(platform_url + "/_sandbox/shopify/umbrella.myshopify.com/**")
        assert visit.cookie("session_id")["sameSite"] == "Lax"  # type: ignore[index]
        visit.shot("14-cross-site-shopify-consent")
        visit.button("Install app").click()
        page.wait_for_url(linkd_url + "/shopify/callback?**")
        assert page.locator("h1").inner_text() == "Shopify connected"

        visit.button("Connect Facebook").click()
        page.wait_for_url(platform_url + "/_sandbox/facebook/**")
        page.get_by_role("button", name="Continue as").click()
        page.wait_for_url(linkd_url + "/facebook/callback?**")
        assert page.locator("h1").inner_text() == "Facebook connected"
        assert "Sandbox Bookshop" in visit.text()

        platform_cookies = {c["name"] for c in visit.context.cookies(platform_url)}
        assert not platform_cookies & {"session_id", "_xsrf"}  # host-only: the other site never sees them
        assert not [m for m in visit.console if "Content Security Policy" in m], visit.console
    finally:
        visit.close()
        if "services" in holder:
            server.call(holder["services"].close)
        server.stop()
