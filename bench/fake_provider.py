"""The benchmark's fake platform: linkd's own Shopify and Facebook sandboxes in ONE process.

Both linkd and the peer app talk to this same process, so neither gets a faster or
laxer fake. It serves:

- `/shop/{shop}/admin/...`  the Shopify sandbox (`ShopifyProvider.sandbox`)
- `/fb/{version}/...`       the Facebook sandbox (`FacebookProvider.sandbox`)
- `/_bench/latency?seconds=S`  sets the latency every sandbox answer waits (POST)
- `/_bench/stats`              request counters per endpoint (GET)

Benchmark settings of the sandboxes, the same for every server measured:
consent auto-approved; `appsecret_proof` not required (the peer never sends one;
linkd still sends it and the fake still checks it when present); Graph answers
`/me/accounts` in one result page as Graph's default page size would; and every
login dialog is answered as a *different* Facebook user with two Pages of its own,
so that each benchmark flow links accounts nobody owns yet (with one fixed user,
the second flow would be refused with 409 by linkd as an account of another user).

Run: `python bench/fake_provider.py --port PORT`; it prints one line
`READY {json}` with the settings that point a provider at it (credentials included:
they are the sandbox's throw-away values).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, when run from anywhere

import tornado.web
from serving import serve_until_stopped

from providers.facebook import FacebookProvider
from providers.facebook_sandbox import SandboxPage, SandboxUser
from providers.shopify import ShopifyProvider

_ids = itertools.count(1)


class _Users:
    """One Facebook user per dialog, found again from the grants of its tokens."""

    def __init__(self) -> None:
        self.by_id: dict[str, SandboxUser] = {}

    def new(self) -> SandboxUser:
        n = next(_ids)
        user = SandboxUser(
            id=str(100_000_000_000_000 + n),
            name=f"Bench User {n}",
            pages=[
                SandboxPage(str(200_000_000_000_000 + 2 * n), f"Bench Page {n}a", "Shop"),
                SandboxPage(str(200_000_000_000_001 + 2 * n), f"Bench Page {n}b", "Shop"),
            ],
        )
        self.by_id[user.id] = user
        return user


def _with_user(cls: type[Any], users: _Users, new: bool) -> type[Any]:
    """`cls` whose synchronous `get` first sets `state.user`: a new user, or the token's user."""
    original = cls.get

    def get(self: Any, *args: str) -> Any:
        state = self.state
        if new:
            state.user = users.new()  # nothing else runs between here and the code grant
        else:
            token = (self.request.arguments.get("access_token") or [b""])[0].decode("utf-8", "replace")
            grant = state.grants.get(token)
            if grant is not None and grant.user_id in users.by_id:
                state.user = users.by_id[grant.user_id]
        return original(self, *args)

    return type(cls.__name__, (cls,), {"get": get})


def _per_flow_users(handlers: list[tuple[str, Any, dict[str, Any]]], users: _Users) -> list[Any]:
    """The Facebook sandbox's handlers, each reading `state.user` after it was set for its request."""
    out = []
    for pattern, cls, kw in handlers:
        endpoint = getattr(cls, "endpoint", "")
        if endpoint in ("dialog", "me", "accounts", "permissions"):
            cls = _with_user(cls, users, new=endpoint == "dialog")
        out.append((pattern, cls, kw))
    return out


class LatencyHandler(tornado.web.RequestHandler):
    def initialize(self, states: list[Any]) -> None:
        self.states = states

    def check_xsrf_cookie(self) -> None:
        return None

    def post(self) -> None:
        seconds = float(self.get_argument("seconds"))
        for state in self.states:
            state.latency = seconds
        self.write({"latency": seconds})


class StatsHandler(tornado.web.RequestHandler):
    def initialize(self, shopify: Any, facebook: Any) -> None:
        self.shopify, self.facebook = shopify, facebook

    def get(self) -> None:
        self.write({"shopify": dict(self.shopify.counters), "facebook": dict(self.facebook.counts)})


def build(base_url: str) -> tuple[tornado.web.Application, dict[str, str]]:
    shop = ShopifyProvider.sandbox(f"{base_url}/shop")
    fb = FacebookProvider.sandbox(f"{base_url}/fb")
    assert shop is not None and fb is not None
    shop.state.auto_approve = True
    fb.state.auto_approve = True
    fb.state.require_proof = False
    fb.state.page_size = 25
    fb.state.requests = type(fb.state.requests)(maxlen=1)  # keep a long run's memory flat
    fb_handlers = _per_flow_users(fb.handlers, _Users())
    handlers: list[Any] = [("/shop" + p, h, kw) for p, h, kw in shop.handlers]
    handlers += [("/fb" + p, h, kw) for p, h, kw in fb_handlers]
    handlers += [
        (r"/_bench/latency", LatencyHandler, {"states": [shop.state, fb.state]}),
        (r"/_bench/stats", StatsHandler, {"shopify": shop.state, "facebook": fb.state}),
    ]
    return tornado.web.Application(handlers), {**shop.settings, **fb.settings}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    base_url = f"http://127.0.0.1:{args.port}"
    app, settings = build(base_url)
    await serve_until_stopped(app, args.port, "READY " + json.dumps(settings))


if __name__ == "__main__":
    asyncio.run(main())
