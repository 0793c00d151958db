"""How to walk each provider's connect flow from outside, up to the callback URL.

The attack tests are written once and run over every provider that has a driver
here: the guarantees of SECURITY.md hold for every provider alike.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import Any

from .browser import Browser, Response


def to_callback(browser: Browser, login_url: str) -> str:
    """Follow login → consent (auto-approved) → the redirect back; return the callback URL, unvisited."""
    response = browser.get(login_url)
    assert response.status == 302, (response.status, response.text[:500])
    hops = 0
    while hops < 6:
        target = response.location
        if urllib.parse.urlsplit(target).path.endswith("/callback"):
            return target
        response = browser.get(target)
        assert response.status in (302, 303), (response.status, response.text[:500])
        hops += 1
    raise AssertionError("the sandbox never redirected back")


def query_of(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True))


def with_query(url: str, **changes: str | None) -> str:
    parts = urllib.parse.urlsplit(url)
    query = [
        (k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k not in changes
    ]
    query += [(k, v) for k, v in changes.items() if v is not None]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


class Driver:
    """Knows a provider's login URL and what must happen before its login (e.g. another connect)."""

    name: str = ""
    login_path: str = ""
    providers: str = ""  # LINKD_PROVIDERS for a world this driver runs in

    def prepare(self, world: Any, browser: Browser) -> None:
        """Bring the browser to where this provider's login can start."""

    def login_url(self, world: Any) -> str:
        return world.url + self.login_path

    def callback_url(self, world: Any, browser: Browser) -> str:
        self.prepare(world, browser)
        return to_callback(browser, self.login_url(world))

    def connect(self, world: Any, browser: Browser) -> Response:
        return browser.get(self.callback_url(world, browser))

    def exchanges(self, world: Any) -> int:
        """How many code exchanges the platform's fake has seen."""
        raise NotImplementedError

    def verifiers(self, world: Any) -> list[str]:
        """The PKCE verifiers the platform's fake received, oldest first."""
        return []

    def secrets(self, world: Any) -> list[str]:
        """Every code, token and client secret the platform's fake minted: none may leak."""
        return list(world.sandboxes[self.name].minted)

    def platform_says(self, world: Any, url: str, **changes: str | None) -> str:
        """The callback URL as the platform would send it with these changes (re-signed if it signs)."""
        return with_query(url, **changes)


class ExampleDriver(Driver):
    name = "example"
    login_path = "/example/login"
    providers = "example"

    def exchanges(self, world: Any) -> int:
        return int(world.sandboxes["example"].counts.get("token", 0))

    def verifiers(self, world: Any) -> list[str]:
        return [
            r["code_verifier"] for r in world.sandboxes["example"].token_requests if r.get("code_verifier")
        ]


class ShopifyDriver(Driver):
    name = "shopify"
    login_path = "/shopify/login?shop=acme"
    providers = "shopify"

    def exchanges(self, world: Any) -> int:
        return int(world.sandboxes["shopify"].requests("access_token"))

    def platform_says(self, world: Any, url: str, **changes: str | None) -> str:
        fake = world.sandboxes["shopify"]
        pairs = [(k, v) for k, v in query_of(url).items() if k != "hmac" and k not in changes]
        pairs += [(k, v) for k, v in changes.items() if v is not None]
        signed = [*pairs, ("hmac", fake.sign(pairs))]
        return urllib.parse.urlsplit(url)._replace(query=urllib.parse.urlencode(signed)).geturl()


class FacebookDriver(Driver):
    name = "facebook"
    login_path = "/facebook/login"
    providers = "shopify,facebook"

    def prepare(self, world: Any, browser: Browser) -> None:
        """Facebook joins an existing profile: connect a shop in this browser first."""
        response = ShopifyDriver().connect(world, browser)
        assert response.status == 200, response.text

    def exchanges(self, world: Any) -> int:
        return int(world.sandboxes["facebook"].code_exchanges())

    def verifiers(self, world: Any) -> list[str]:
        return list(world.sandboxes["facebook"].verifiers())

    def secrets(self, world: Any) -> list[str]:
        return list(world.sandboxes["facebook"].secrets())


class DeclaredDriver(ExampleDriver):
    """A platform declared in a TOML file (tests/providers.d/declared.toml), no code at all."""

    name = "declared"
    login_path = "/declared/login"
    providers = "declared"

    def exchanges(self, world: Any) -> int:
        return int(world.sandboxes["declared"].counts.get("token", 0))

    def verifiers(self, world: Any) -> list[str]:
        return [
            r["code_verifier"] for r in world.sandboxes["declared"].token_requests if r.get("code_verifier")
        ]


DRIVERS: dict[str, Callable[[], Driver]] = {
    "declared": DeclaredDriver,
    "example": ExampleDriver,
    "shopify": ShopifyDriver,
    "facebook": FacebookDriver,
}
