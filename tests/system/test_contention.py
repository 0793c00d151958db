"""SECURITY.md D3: another process holding `BEGIN IMMEDIATE` on the databases.

A separate Python process takes the write lock of both database files and keeps it
while connect flows, logins and webhooks run against two workers:

- a short hold (1 s) makes requests wait: they answer late, and successfully;
- a hold well past the store's lock-wait budget (5 s; the issue's 30 s is shortened
  to 8 s to keep the suite fast, which changes nothing past the budget) gives 503 with
  `Retry-After`, a clean body, no token request upstream and no row written;
- `/healthz` answers within 200 ms throughout (database reads are off the event loop);
- once the lock is released everything recovers: the very callbacks that got a 503
  succeed when retried (their states were never spent), new flows and a webhook
  delivered again succeed.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from ..browser import Browser, Response
from ..flows import to_callback
from .conftest import Fakes, Linkd, connect

SHORT_HOLD = 1.0
LONG_HOLD = 8.0  # well past the 5 s lock-wait budget
LOCK_BUDGET = 5.0
HEALTH_BOUND = 0.2
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

HOLDER = """
import sqlite3, sys
conns = [sqlite3.connect(p, isolation_level=None, timeout=30) for p in sys.argv[1:]]
for c in conns:
    c.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.readline()
for c in conns:
    c.execute("ROLLBACK")
print("released", flush=True)
"""


class Holder:
    """Another process holding the write lock of the database files until released."""

    def __init__(self, daemon: Linkd) -> None:
        paths = [str(p) for p in daemon.db_paths()]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, *paths], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "held"
        self.held_at = time.monotonic()
        self.released_at = 0.0

    def release(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "released"
        self.released_at = time.monotonic()
        assert self.proc.wait(10) == 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class HealthProbe:
    """GET /healthz every 50 ms from a thread; every (latency, status) is kept."""

    port: int
    samples: list[tuple[float, float, int]] = field(default_factory=list)  # (at, seconds, status)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", "/healthz")
                status = conn.getresponse().status
            finally:
                conn.close()
            self.samples.append((started, time.monotonic() - started, status))
            self.stop.wait(0.05)  # the probing interval

    def between(self, start: float, end: float) -> list[tuple[float, float, int]]:
        return [s for s in self.samples if start <= s[0] <= end]


@pytest.fixture
def served(linkd: Callable[..., Linkd], fakes: Fakes) -> Iterator[tuple[Linkd, HealthProbe]]:
    daemon = linkd(fakes)
    probe = HealthProbe(daemon.port)
    thread = threading.Thread(target=probe.run, daemon=True)
    thread.start()
    yield daemon, probe
    probe.stop.set()
    thread.join(15)


@dataclass
class Timed:
    started: float
    ended: float
    response: Response

    @property
    def took(self) -> float:
        return self.ended - self.started


def timed(fn: Callable[[], Response]) -> Timed:
    started = time.monotonic()
    response = fn()
    return Timed(started, time.monotonic(), response)


def ready_callbacks(daemon: Linkd, n: int) -> list[tuple[Browser, str]]:
    """n browsers brought up to the callback (login done, consent given), callbacks not yet sent."""
    out = []
    for i in range(n):
        browser = Browser("application/json" if i % 2 else "text/html")
        out.append((browser, to_callback(browser, daemon.url + "/example/login")))
    return out


def callback_of(browser: Browser, url: str) -> Callable[[], Response]:
    return lambda: browser.get(url)


def webhook(daemon: Linkd, fakes: Fakes, headers: dict[str, str], body: bytes) -> Response:
    return Browser("application/json").post(daemon.url + "/shopify/webhook", body, headers=headers)


def fire(jobs: list[Callable[[], Response]]) -> list[Timed]:
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(timed, jobs))


def assert_health_fast(probe: HealthProbe, start: float, end: float) -> int:
    samples = probe.between(start, end)
    assert samples, "no /healthz probe in the window"
    slow = [(round(took, 3), status) for _, took, status in samples if took > HEALTH_BOUND or status != 200]
    assert not slow, f"/healthz slow or failing under the lock: {slow}"
    return len(samples)


def test_short_hold_makes_requests_wait_then_succeed(served: tuple[Linkd, HealthProbe], fakes: Fakes) -> None:
    daemon, probe = served
    pending = ready_callbacks(daemon, 6)
    headers, body = fakes.shopify.signed_webhook("customers/data_request", "acme.myshopify.com")
    jobs: list[Callable[[], Response]] = [callback_of(b, u) for b, u in pending]
    jobs += [lambda: connect(Browser("application/json"), daemon.url, "/example/login") for _ in range(4)]
    jobs += [lambda: webhook(daemon, fakes, headers, body)]

    holder = Holder(daemon)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            results = pool.submit(fire, jobs)
            time.sleep(SHORT_HOLD)  # how long the other process keeps the lock: the test's parameter
            holder.release()
            done = results.result(30)
    finally:
        holder.kill()

    for result in done:
        assert result.response.status == 200, (result.response.status, result.response.text[:300])
        assert result.ended >= holder.released_at - 0.05, "answered while the lock was still held"
    waited = max(r.took for r in done)
    assert waited >= SHORT_HOLD * 0.7, waited
    probes = assert_health_fast(probe, holder.held_at, holder.released_at + 0.5)
    print(
        f"short hold {SHORT_HOLD:g}s: {len(done)} requests all 200, slowest {waited:.2f}s; "
        f"{probes} /healthz probes under the lock, max {max_probe(probe):.0f} ms"
    )


def test_long_hold_gives_503_retry_after_nothing_partial_then_recovers(
    served: tuple[Linkd, HealthProbe], fakes: Fakes
) -> None:
    daemon, probe = served
    # four requests at once: never more than a worker's four store threads (see the burst test)
    pending = ready_callbacks(daemon, 2)
    login = Browser("text/html")
    headers, body = fakes.shopify.signed_webhook("customers/data_request", "acme.myshopify.com")
    jobs: list[Callable[[], Response]] = [callback_of(b, u) for b, u in pending]
    jobs += [lambda: login.get(daemon.url + "/example/login"), lambda: webhook(daemon, fakes, headers, body)]
    before = daemon.snapshot()
    exchanges = fakes.example.counts.get("token", 0)

    holder = Holder(daemon)
    try:
        done = fire(jobs)
        # every request gave up while the lock is still held; nothing reached the platform or the disk
        assert time.monotonic() < holder.held_at + LONG_HOLD, "the requests outlasted the hold"
        for result in done:
            check_busy(result)
        assert fakes.example.counts.get("token", 0) == exchanges, "a token request went out"
        assert daemon.snapshot() == before, "a row was written by a request that answered 503"
        assert login.cookie("session_id") is None, "a 503 login set a session cookie"
        time.sleep(max(0.0, holder.held_at + LONG_HOLD - time.monotonic()))  # the rest of the hold
        holder.release()
    finally:
        holder.kill()
    probes = assert_health_fast(probe, holder.held_at, holder.released_at + 0.5)

    # recovery: the same callbacks (their states were never spent), new flows, the webhook again
    retried = [browser.get(url) for browser, url in pending]
    assert [r.status for r in retried] == [200] * len(pending), [r.text[:200] for r in retried]
    fresh = [connect(Browser("application/json"), daemon.url, "/example/login") for _ in range(3)]
    assert [r.status for r in fresh] == [200] * 3
    again = webhook(daemon, fakes, headers, body)
    assert again.status == 200 and again.json() == {"status": "acknowledged"}, again.text
    assert fakes.example.counts.get("token", 0) == exchanges + len(pending) + 3
    assert_health_fast(probe, holder.released_at, time.monotonic())
    print(
        f"long hold {LONG_HOLD:g}s (budget {LOCK_BUDGET:g}s): {len(done)} requests answered 503 "
        "with Retry-After "
        f"in {min(r.took for r in done):.2f}-{max(r.took for r in done):.2f}s, nothing written; "
        f"{probes} /healthz probes under the lock, max {max_probe(probe):.0f} ms; all recovered after release"
    )


def test_a_burst_beyond_the_store_threads_still_answers_503_within_the_budget(
    served: tuple[Linkd, HealthProbe], fakes: Fakes
) -> None:
    daemon, probe = served
    pending = ready_callbacks(daemon, 8)
    jobs: list[Callable[[], Response]] = [callback_of(b, u) for b, u in pending]
    jobs += [lambda: Browser("application/json").get(daemon.url + "/example/login") for _ in range(8)]
    holder = Holder(daemon)
    timer = threading.Timer(LONG_HOLD, holder.release)  # the other process lets go after LONG_HOLD
    timer.start()
    try:
        done = fire(jobs)
        timer.join(LONG_HOLD + 10)
    finally:
        timer.cancel()
        holder.kill()
    assert_health_fast(probe, holder.held_at, holder.released_at + 0.5)
    took = sorted((round(r.took, 1), r.response.status) for r in done)
    print(f"burst of {len(jobs)} under a {LONG_HOLD:g}s hold answered after (s, status): {took}")
    for result in done:
        check_busy(result)


def check_busy(result: Timed) -> None:
    response = result.response
    assert response.status == 503, (response.status, response.text[:300])
    retry_after = response.headers.get("Retry-After", "")
    assert retry_after.isdigit() and int(retry_after) >= 1, retry_after
    assert LOCK_BUDGET * 0.8 <= result.took <= LOCK_BUDGET + 2.5, result.took
    assert "Traceback" not in response.text
    if response.headers.get("Content-Type", "").startswith("application/json"):
        assert response.json() == {
            "error": "busy",
            "message": "The service is busy. Please retry in a moment.",
        }
    else:
        assert response.headers.get("Content-Type", "").startswith("text/html"), response.headers
        assert "linkd is busy" in response.text


def max_probe(probe: HealthProbe) -> float:
    return 1000 * max(took for _, took, _ in probe.samples)
