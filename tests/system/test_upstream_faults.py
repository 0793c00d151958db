"""SECURITY.md I4 and the spec's upstream rules: a platform that misbehaves ends the connect cleanly.

For each platform endpoint linkd calls during a connect (the example plugin's token and
userinfo endpoints, Shopify's access_token and GraphQL, Facebook's token, me and
accounts), the fake answers once with a 500, garbage instead of JSON, an HTML page, an
empty body, a hung socket, a slow trickle of a valid answer, or a redirect to another
host. Every case must end in a clean error page (or JSON error) within the configured
upstream timeout, with nothing stored, no request to the redirect's target, no
traceback or secret in the answer or the log, and the same workers still serving:
the next connect of that platform succeeds.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado.web
from linkd_example import TokenHandler
from tornado.iostream import StreamClosedError

from providers.oauth2_sandbox import UserInfoHandler

from ..browser import Browser, Response
from ..flows import to_callback
from ..servers import ServerThread, free_port
from .conftest import Fakes, Launcher, Linkd, connect, serve_fakes

TIMEOUT = 1.0  # LINKD_UPSTREAM_TIMEOUT for this module: low, so hung calls end fast
MARGIN = 1.0  # what linkd may add to the one call that times out
STALL = 3 * TIMEOUT  # how long a hung or slow fake keeps the socket
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


class Faults:
    """Modes queued per endpoint of the example fake, and the trap a redirect points to."""

    def __init__(self, trap_url: str) -> None:
        self.queued: dict[str, collections.deque[str]] = collections.defaultdict(collections.deque)
        self.trap_url = trap_url
        self.trap_hits = 0

    def take(self, endpoint: str) -> str | None:
        queue = self.queued[endpoint]
        return queue.popleft() if queue else None


class FaultMixin(tornado.web.RequestHandler):
    """Plays a queued fault instead of the endpoint's answer (mixed in before the fake's handler)."""

    endpoint: str

    def initialize(self, fake: Any, faults: Faults) -> None:
        super().initialize(fake)
        self.faults = faults

    async def prepare(self) -> None:
        super().prepare()  # the fake's own counting
        mode = self.faults.take(self.endpoint)
        if mode is not None and not self._finished:
            await self.play(mode)

    async def play(self, mode: str) -> None:
        if mode == "500":
            self.set_status(500)
            self.finish({"error": "server_error"})
        elif mode == "garbage":
            self.set_header("Content-Type", "application/json")
            self.finish(b'{"access_token": "at_\x00\xff\xfe')
        elif mode == "html":
            self.set_header("Content-Type", "text/html")
            self.finish("<!doctype html><title>Maintenance</title><p>Back soon.</p>")
        elif mode == "empty":
            self.finish(b"")
        elif mode == "redirect":
            self.redirect(self.faults.trap_url + self.request.path)
        elif mode == "hang":  # read the request, never answer: a socket that hangs
            await asyncio.sleep(STALL)
            self.abandon()
        elif mode == "trickle":  # a valid answer, one byte at a time, slower than the timeout
            body = json.dumps({"access_token": "at_trickle", "token_type": "bearer", "sub": "t"}).encode()
            self.set_header("Content-Type", "application/json")
            self.set_header("Content-Length", str(len(body)))
            try:
                for i in range(len(body)):
                    self.write(body[i : i + 1])
                    await self.flush()
                    await asyncio.sleep(STALL / len(body))
            except StreamClosedError:
                self.abandon()
                return
            self.finish()

    def abandon(self) -> None:
        """The client went away: end the handler without answering."""
        self._finished = True
        self.request.connection.close()  # type: ignore[union-attr]


class FaultyToken(FaultMixin, TokenHandler):  # type: ignore[misc]
    pass


class FaultyUserInfo(FaultMixin, UserInfoHandler):  # type: ignore[misc]
    pass


class Trap(tornado.web.RequestHandler):
    """Another host: a redirect that linkd followed would land here."""

    def initialize(self, faults: Faults) -> None:
        self.faults = faults

    def check_xsrf_cookie(self) -> None:
        return None

    def prepare(self) -> None:
        self.faults.trap_hits += 1
        self.finish({"access_token": "at_stolen", "token_type": "bearer", "sub": "stolen"})


class World:
    def __init__(self, daemon: Linkd, fakes: Fakes, faults: Faults) -> None:
        self.daemon = daemon
        self.fakes = fakes
        self.faults = faults
        self.workers = daemon.worker_pids()
        self.shops = (f"fault-{i}" for i in range(1000))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    trap_port = free_port()
    faults = Faults(f"http://localhost:{trap_port}")
    trap = ServerThread(lambda: tornado.web.Application([(r"/.*", Trap, {"faults": faults})]), port=trap_port)
    trap.start()
    swap = {
        TokenHandler: (FaultyToken, {"faults": faults}),
        UserInfoHandler: (FaultyUserInfo, {"faults": faults}),
    }
    fakes = serve_fakes(swap)
    fakes.shopify.hang_seconds = STALL
    fakes.facebook.slow_seconds = STALL
    launcher = Launcher(Path(tmp_path_factory.mktemp("faults")))
    daemon = launcher(fakes, LINKD_UPSTREAM_TIMEOUT=str(TIMEOUT))
    yield World(daemon, fakes, faults)
    launcher.close()
    fakes.server.stop()
    trap.stop()


EXAMPLE_MODES = ("500", "garbage", "html", "empty", "hang", "trickle", "redirect")
CASES = [
    *[("example", "token", m) for m in EXAMPLE_MODES],
    *[("example", "userinfo", m) for m in EXAMPLE_MODES],
    *[("shopify", "access_token", m) for m in ("500", "garbage", "hang", "redirect")],
    *[("shopify", "graphql", m) for m in ("500", "garbage", "hang", "redirect")],
    *[("facebook", "token", m) for m in ("500", "garbage", "html", "empty", "slow", "redirect")],
    *[("facebook", "me", m) for m in ("500", "garbage", "html", "redirect")],
    *[("facebook", "accounts", m) for m in ("500", "garbage", "html", "empty", "slow", "redirect")],
]


FACEBOOK_HOME = "/shopify/login?shop=fb-home"  # one profile for every Facebook connect: a Page has one owner


def login_path(world: World, provider: str) -> str:
    if provider == "shopify":
        return f"/shopify/login?shop={next(world.shops)}"
    return f"/{provider}/login"


def queue_fault(world: World, provider: str, endpoint: str, mode: str) -> None:
    if provider == "example":
        world.faults.queued[endpoint].append(mode)
    elif provider == "shopify":
        world.fakes.shopify.fail_next(endpoint, mode)
    else:
        world.fakes.facebook.fail(endpoint, mode)


@pytest.mark.parametrize(("provider", "endpoint", "mode"), CASES, ids=["/".join(c) for c in CASES])
def test_a_misbehaving_platform_ends_the_connect_cleanly(
    world: World, provider: str, endpoint: str, mode: str
) -> None:
    daemon, fakes = world.daemon, world.fakes
    html = CASES.index((provider, endpoint, mode)) % 2 == 0
    browser = Browser("text/html" if html else "application/json")
    if provider == "facebook":  # Facebook joins a profile a shop started
        assert connect(browser, daemon.url, FACEBOOK_HOME).status == 200
    callback = to_callback(browser, daemon.url + login_path(world, provider))
    before = daemon.snapshot()
    trap_hits = world.faults.trap_hits
    queue_fault(world, provider, endpoint, mode)

    started = time.monotonic()
    response = browser.get(callback)
    took = time.monotonic() - started

    assert response.status == 502, (response.status, response.text[:500])
    assert took < TIMEOUT + MARGIN, f"{took:.2f}s for a {TIMEOUT:g}s upstream timeout"
    if mode in ("hang", "trickle", "slow"):
        assert took >= TIMEOUT * 0.9, f"{took:.2f}s: the stall was not what ended the connect"
    check_clean(response, html, fakes)
    after = daemon.snapshot()
    for table in ("users", "connections", "webhook_events", "deletions", "audit"):
        assert after[table] == before[table], f"{table} changed after a failed connect"
    assert world.faults.trap_hits == trap_hits, "linkd followed a redirect to another host"
    assert fault_played(world, provider, endpoint), "the fault was not played"

    # the same workers keep serving: the next connect of this platform succeeds
    assert daemon.worker_pids() == world.workers, "a worker died"
    again = Browser("application/json")
    if provider == "facebook":
        assert connect(again, daemon.url, FACEBOOK_HOME).status == 200
    retry = connect(again, daemon.url, login_path(world, provider))
    assert retry.status == 200, retry.text[:300]
    log = daemon.log()
    assert "Traceback" not in log and "unhandled" not in log, log[-3000:]


def fault_played(world: World, provider: str, endpoint: str) -> bool:
    if provider == "example":
        return not world.faults.queued[endpoint]
    if provider == "shopify":
        return not world.fakes.shopify.failures[endpoint]
    return world.fakes.facebook.take_failure(endpoint) is None


def check_clean(response: Response, html: bool, fakes: Fakes) -> None:
    """A short error page or JSON error: no traceback, no internals, no secret."""
    text = response.text
    for marker in ("Traceback", 'File "', "tornado", "Exception", "127.0.0.1:"):
        assert marker not in text, (marker, text[:500])
    for secret in fakes.secrets():
        assert secret not in text
    if html:
        assert response.headers.get("Content-Type", "").startswith("text/html")
        assert "The platform did not answer as expected" in text
        assert "frame-ancestors 'none'" in response.headers.get("Content-Security-Policy", "")
    else:
        body = response.json()
        assert set(body) == {"error", "message"} and body["error"] == "provider_error", body
