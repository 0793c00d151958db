"""Load held: two workers serve 60 s of mixed traffic at the highest rate that gives no error.

Not part of the default run (`slow`): `pytest -m slow tests/system` or `tox -e load`.

The traffic mixes, per eight actions of a virtual user: one full connect (login, the
fake's consent, callback: two linkd requests and two upstream calls), two bare logins,
two signed Shopify webhooks and three API token reads (`LINKD_API_TOKEN`) of connections
made beforehand. Closed-loop clients (aiohttp, no redirects followed, cookies by hand)
first probe a few concurrency levels for 5 s each; the level with the best throughput
and no error is then held for 60 s. Every answer must be the expected status (302, 200):
the error count must be 0. Reported: the rate, the error count, latency percentiles and
the workers' RSS before and after the hold (growth bounded, generously).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import pytest

from .conftest import Fakes, Launcher, Linkd, connect, serve_fakes

HOLD = 60.0
PROBE = 5.0
LEVELS = (4, 8, 16, 32, 64)
RSS_BOUND_KB = 40 * 1024
ACTIONS = ("connect", "login", "webhook", "token", "login", "token", "webhook", "token")


@dataclass
class Stats:
    seconds: float = 0.0
    requests: int = 0  # requests answered by linkd
    actions: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        return (
            1000 * statistics.quantiles(self.latencies, n=100)[int(q) - 1] if len(self.latencies) > 2 else 0.0
        )


class Load:
    """The traffic of one run: `users` closed-loop virtual users until the deadline."""

    def __init__(self, daemon: Linkd, fakes: Fakes, connection_ids: list[int]) -> None:
        self.daemon = daemon
        self.fakes = fakes
        self.ids = connection_ids
        self.auth = {"Authorization": f"Bearer {daemon.api_token}"}

    async def run(self, users: int, seconds: float) -> Stats:
        import aiohttp

        stats = Stats()
        connector = aiohttp.TCPConnector(limit=users * 2)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
        ) as session:
            started = time.monotonic()
            deadline = started + seconds
            await asyncio.gather(*(self.user(session, u, deadline, stats) for u in range(users)))
            stats.seconds = time.monotonic() - started
        return stats

    async def user(self, session: Any, number: int, deadline: float, stats: Stats) -> None:
        step = number
        while time.monotonic() < deadline:
            action = ACTIONS[step % len(ACTIONS)]
            step += 1
            try:
                await getattr(self, action)(session, stats, step)
                stats.actions[action] = stats.actions.get(action, 0) + 1
            except Exception as exc:  # every failure is an error of the run
                stats.errors.append(f"{action}: {type(exc).__name__}: {exc}"[:300])

    async def call(self, session: Any, stats: Stats, method: str, url: str, expect: int, **kw: Any) -> Any:
        started = time.monotonic()
        async with session.request(method, url, allow_redirects=False, **kw) as response:
            body = await response.read()
            stats.latencies.append(time.monotonic() - started)
            if url.startswith(self.daemon.url):
                stats.requests += 1
            if response.status != expect:
                raise AssertionError(
                    f"{method} {urllib.parse.urlsplit(url).path} {response.status} {body[:120]!r}"
                )
            return response, body

    async def login(self, session: Any, stats: Stats, step: int) -> tuple[str, str]:
        response, _ = await self.call(session, stats, "GET", self.daemon.url + "/example/login", 302)
        cookie = response.cookies["session_id"].value
        return response.headers["Location"], cookie

    async def connect(self, session: Any, stats: Stats, step: int) -> None:
        authorize, cookie = await self.login(session, stats, step)
        response, _ = await self.call(session, stats, "GET", authorize, 302)
        callback = response.headers["Location"]
        headers = {"Cookie": f"session_id={cookie}", "Accept": "application/json"}
        await self.call(session, stats, "GET", callback, 200, headers=headers)

    async def webhook(self, session: Any, stats: Stats, step: int) -> None:
        headers, body = self.fakes.shopify.signed_webhook("customers/data_request", "acme.myshopify.com")
        await self.call(
            session, stats, "POST", self.daemon.url + "/shopify/webhook", 200, data=body, headers=headers
        )

    async def token(self, session: Any, stats: Stats, step: int) -> None:
        url = f"{self.daemon.url}/api/v1/connections/{self.ids[step % len(self.ids)]}/token"
        await self.call(session, stats, "GET", url, 200, headers=self.auth)


@pytest.mark.slow
def test_two_workers_hold_sixty_seconds_of_mixed_traffic_without_error(linkd: Launcher) -> None:
    pytest.importorskip("aiohttp")
    fakes = serve_fakes(unique_subjects=True)
    try:
        daemon = linkd(fakes, LINKD_LOG_LEVEL="WARNING")
        from ..browser import Browser

        for _ in range(20):
            assert connect(Browser("application/json"), daemon.url, "/example/login").status == 200
        listed = daemon.api("/api/v1/connections?provider=example").json()["connections"]
        load = Load(daemon, fakes, [c["id"] for c in listed])

        probes = {}
        for users in LEVELS:
            stats = asyncio.run(load.run(users, PROBE))
            probes[users] = stats
            print(f"probe {users:>2} users: {stats.rate:7.1f} req/s, {len(stats.errors)} errors")
        clean = [u for u, s in probes.items() if not s.errors]
        assert clean, {u: s.errors[:3] for u, s in probes.items()}
        users = max(clean, key=lambda u: probes[u].rate)

        before = daemon.rss_kb()
        stats = asyncio.run(load.run(users, HOLD))
        after = daemon.rss_kb()
        workers_kept = set(after) == set(before)
    finally:
        fakes.server.stop()
    growth = {pid: after[pid] - before[pid] for pid in after if pid in before}
    print(
        f"load held: {stats.seconds:.0f}s at {users} concurrent users, {stats.requests} linkd requests = "
        f"{stats.rate:.1f} req/s ({stats.actions}), errors {len(stats.errors)}, latency p50 "
        f"{stats.percentile(50):.1f} ms p99 {stats.percentile(99):.1f} ms; worker RSS {before} -> {after} kB "
        f"(growth {growth} kB)"
    )
    assert not stats.errors, stats.errors[:10]
    assert workers_kept, "a worker was replaced under load"
    assert all(g < RSS_BOUND_KB for g in growth.values()), growth
