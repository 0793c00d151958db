"""Several linkd hosts over one PostgreSQL database (tests/pg.py starts a real server).

First the backend's own cross-host guarantees (migrations by instances starting at
once, the purge lock, lock waits, dropped connections, what an error may say),
then a system test with two `linkd serve` processes A and B sharing one database
behind no sticky load balancer: a flow started on A completes on B, replays spread
over both give one success, a race to refresh spends the refresh token once, and a
`kill -9` of A loses nothing that was answered as linked while B keeps serving.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import linkd_example
import psycopg
import pytest
import tornado.web

from linkd.crypto import Keyring
from linkd.errors import ConfigError, StoreBusy, StoreUnavailable
from linkd.provider import TokenSet
from linkd.store import postgresql_migrations as pg_schema
from linkd.store.postgresql import PostgreSQLStore

from .browser import Browser
from .conftest import linkd_cli
from .flows import to_callback
from .pg import PASSWORD, PostgresServer, pg_server_fixture, pg_url_fixture  # noqa: F401 -- fixtures
from .processes import clean_env, start_linkd, stop, wait_healthy, write_env_file
from .servers import ServerThread, free_port
from .test_store import account, new_user, session_row, state_row

pytestmark = pytest.mark.postgresql
SECRET = "TXVsdGktaG9zdC10ZXN0LXNlY3JldC13aXRoLWVub3VnaC1lbnRyb3B5LTIwMjY"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def sql(url: str, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, args)
        return cur.fetchall() if cur.description else []


# the backend's cross-host guarantees -----------------------------------------------------------
EXTRA = "CREATE TABLE extra_table (x INTEGER); INSERT INTO extra_table VALUES (1);"


OPEN_SCRIPT = """
import asyncio, os, sys, time
from linkd.store import postgresql_migrations as schema
from linkd.store.postgresql import PostgreSQLStore

async def main():
    store = PostgreSQLStore(sys.argv[1], threads=1, migrations=[*schema.MIGRATIONS, sys.argv[2]])
    await store.open()
    await store.record_audit(f"pid-{os.getpid()}", "opened", None, time.time())
    await store.close()

print("ready", flush=True)
sys.stdin.readline()
asyncio.run(main())
"""


def release_together(procs: list[subprocess.Popen[str]]) -> None:
    """A barrier without sleeping: each process says `ready`, then all get `go` at once."""
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()


def python(script: str, *args: str) -> subprocess.Popen[str]:
    env = clean_env()
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(procs: list[subprocess.Popen[str]], timeout: float = 60) -> list[tuple[str, str]]:
    try:
        results = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * len(procs), [err[-2000:] for _, err in results]
    return results


def test_instances_starting_at_once_migrate_once_and_the_version_is_in_the_database(pg_url: str) -> None:
    procs = [python(OPEN_SCRIPT, pg_url, EXTRA) for _ in range(4)]
    release_together(procs)
    finish(procs)
    assert [r[0] for r in sql(pg_url, "SELECT version FROM schema_version ORDER BY version")] == [1, 2]
    assert sql(pg_url, "SELECT count(*) FROM extra_table") == [(1,)]  # the script ran exactly once
    assert sql(pg_url, "SELECT count(*) FROM audit") == [(4,)]
    names = {r[0] for r in sql(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"sessions", "states", "users", "connections", "webhook_events", "deletions", "audit"} < names
    # and an older linkd refuses a schema it does not know, saying what to do
    with pytest.raises(ConfigError, match="newer than this linkd"):
        run(PostgreSQLStore(pg_url).open())


def test_password_never_in_describe_or_errors_and_check_says_what_is_wrong(
    pg_server: PostgresServer, tmp_path: Path
) -> None:
    secret_pw = "S3cret-" + os.urandom(6).hex()
    closed_port = free_port()
    unreachable = f"postgresql://linkd:{secret_pw}@127.0.0.1:{closed_port}/linkd"
    store = PostgreSQLStore(unreachable, connect_timeout=2)
    assert store.describe() == f"postgresql://linkd:***@127.0.0.1:{closed_port}/linkd"
    with pytest.raises(StoreUnavailable) as info:
        run(store.open())
    message = str(info.value)
    assert "Cannot reach the PostgreSQL database at postgresql://linkd:***@" in message
    assert "refused" in message.lower() and secret_pw not in message

    missing = f"postgresql://postgres:{secret_pw}@127.0.0.1:{pg_server.port}/no_such_db"
    env = write_env_file(
        tmp_path / "check.env", {"STATE_TOKEN_SECRET": SECRET, "LINKD_DATABASE_URL": missing}
    )
    result = linkd_cli("--env-file", str(env), "check", cwd=tmp_path)
    assert result.returncode != 0
    assert 'database "no_such_db" does not exist' in result.stderr and "postgres:***@" in result.stderr
    assert secret_pw not in result.stdout + result.stderr

    good = pg_server.new_database()
    env = write_env_file(tmp_path / "ok.env", {"STATE_TOKEN_SECRET": SECRET, "LINKD_DATABASE_URL": good})
    result = linkd_cli("--env-file", str(env), "check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "database ok" in result.stdout and PASSWORD not in result.stdout + result.stderr
    assert "database was empty: schema version 1 created" in result.stderr  # said, not silent
    again = linkd_cli("--env-file", str(env), "check", cwd=tmp_path)
    assert again.returncode == 0 and "schema" not in again.stderr


def test_lock_waits_then_store_busy_while_reads_and_ping_stay_fast(pg_url: str) -> None:
    now = time.time()
    store = PostgreSQLStore(pg_url, lock_wait=1.0)
    run(store.open())
    cid = run(store.save_link(account("shopify", "shop-1"), [], new_user(now), now)).connections[0].id
    other = psycopg.connect(pg_url)  # another host, holding the row in a long transaction
    try:
        other.execute("SELECT id FROM connections WHERE id = %s FOR UPDATE", (cid,))

        async def during_hold() -> tuple[list[float], float, BaseException | None]:
            t0 = time.monotonic()
            write = asyncio.ensure_future(store.set_status(cid, "reconnect", now))
            timings = []
            for call in (store.ping, lambda: store.get_connection(cid), store.counts):
                t = time.monotonic()
                await call()
                timings.append(time.monotonic() - t)
            try:
                await write
            except StoreBusy as exc:
                return timings, time.monotonic() - t0, exc
            return timings, time.monotonic() - t0, None

        timings, waited, error = run(during_hold())
        assert max(timings) < 0.3, timings
        assert isinstance(error, StoreBusy) and 1.0 <= waited < 2.5
        other.rollback()
        other.execute("SELECT id FROM connections WHERE id = %s FOR UPDATE", (cid,))
        threading.Timer(0.3, other.rollback).start()  # a short lock is simply waited for
        t = time.monotonic()
        run(store.set_status(cid, "reconnect", now))
        assert 0.2 <= time.monotonic() - t < 1.0
        row = run(store.get_connection(cid))
        assert row is not None and row.status == "reconnect"
    finally:
        other.close()
        run(store.close())


def test_purge_runs_on_one_instance_at_a_time(pg_url: str) -> None:
    now = time.time()
    store = PostgreSQLStore(pg_url)
    run(store.open())
    run(store.insert_session(session_row(now, ttl=-10)))
    run(store.insert_state(state_row("s", now, ttl=-10)[1]))
    with psycopg.connect(pg_url, autocommit=True) as other:  # another instance is purging right now
        other.execute("SELECT pg_advisory_lock(%s)", (pg_schema.PURGE_LOCK,))
        assert run(store.purge(now)) == {"sessions": 0, "states": 0, "webhook_events": 0}
        assert run(store.counts())["sessions"] == 1
        other.execute("SELECT pg_advisory_unlock(%s)", (pg_schema.PURGE_LOCK,))
        assert run(store.purge(now)) == {"sessions": 1, "states": 1, "webhook_events": 0}
    run(store.close())


def test_dropped_connections_are_replaced_without_an_error(pg_url: str) -> None:
    """A database restart or failover kills every pooled connection; the next calls still work."""
    now = time.time()

    async def main() -> None:
        store = PostgreSQLStore(pg_url, threads=3)
        await store.open()
        await store.record_audit("t", "before", None, now)
        killed = sql(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'linkd'",
        )
        assert len(killed) >= 4  # the pool's three and the health check's
        await store.ping()
        await asyncio.gather(*(store.record_audit("t", f"after-{i}", None, now) for i in range(6)))
        assert (await store.counts())["audit"] == 7
        await store.close()

    run(main())


def test_two_hosts_linking_one_account_at_once_agree_on_its_owner(pg_url: str) -> None:
    """Both see no owner and each brings a new user; one wins, the other is re-run and joins it."""

    async def main() -> None:
        a, b = PostgreSQLStore(pg_url), PostgreSQLStore(pg_url)
        await asyncio.gather(a.open(), b.open())
        now = time.time()
        for i in range(8):
            outcomes = await asyncio.gather(
                a.save_link(account("shopify", f"shop-{i}"), [], new_user(now), now),
                b.save_link(account("shopify", f"shop-{i}"), [], new_user(now), now),
            )
            assert outcomes[0].user == outcomes[1].user
            assert sum(o.created_user for o in outcomes) == 1
            assert outcomes[0].connections[0].id == outcomes[1].connections[0].id
        counts = await a.counts()
        assert (counts["users"], counts["connections"]) == (8, 8)
        await asyncio.gather(a.close(), b.close())

    run(main())


def test_the_database_holds_no_plaintext_token_or_uuid(pg_url: str) -> None:
    import uuid

    token, the_uuid = "EAAtoken" + os.urandom(16).hex(), str(uuid.uuid4())
    store = PostgreSQLStore(pg_url)
    run(store.open())
    now = time.time()
    run(store.save_link(account("facebook", "fb-1", token=token), [], new_user(now, the_uuid), now))
    run(store.insert_session(session_row(now, user_uuid=the_uuid)))
    run(store.close())
    tables = ("sessions", "states", "users", "connections", "webhook_events", "deletions", "audit")
    dump = "\n".join(str(r) for t in tables for r in sql(pg_url, f"SELECT t::text FROM {t} t"))
    assert "fb-1" in dump  # the scan does see the rows
    assert token not in dump and the_uuid not in dump and the_uuid.replace("-", "") not in dump


# two `linkd serve` processes over one database ----------------------------------------------------
class Gate:
    """Holds the fake platform's token endpoint while closed, counting who waits."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()
        self.waiting = threading.Semaphore(0)


def gated(handler: type[tornado.web.RequestHandler], gate: Gate) -> type[tornado.web.RequestHandler]:
    class Gated(handler):  # type: ignore[valid-type,misc]
        async def prepare(self) -> None:
            result = super().prepare()  # the fake counts requests there
            if result is not None:
                await result
            if (
                self.request.method == "POST"
                and self.request.path.endswith("/token")
                and not gate.open.is_set()
            ):
                gate.waiting.release()
                await asyncio.get_running_loop().run_in_executor(None, gate.open.wait, 30)

    return Gated


@dataclass
class Cluster:
    url: str  # the database
    env_file: Path
    ports: list[int]
    procs: list[subprocess.Popen[bytes]]
    fake: Any  # the fake platform's state (FakeOAuth)
    gate: Gate
    logs: list[Path]

    def base(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def start(self, i: int) -> None:
        log = self.logs[i].open("ab")
        self.procs[i] = start_linkd(self.env_file, self.ports[i], stderr=log)
        log.close()

    def kill9(self, i: int) -> None:
        """kill -9 of a whole host: the supervisor and its workers."""
        os.killpg(self.procs[i].pid, signal.SIGKILL)
        self.procs[i].wait(10)

    def subject(self, name: str) -> None:
        self.fake.next_subject = name


@pytest.fixture(scope="module")
def cluster(pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("multihost")
    url = pg_server.new_database()
    fake_port = free_port()
    sandbox = linkd_example.ExampleProvider.sandbox(f"http://127.0.0.1:{fake_port}/oauth")
    gate = Gate()
    prefix = urllib.parse.urlsplit(f"http://127.0.0.1:{fake_port}/oauth").path
    handlers = [(prefix + pattern, gated(cls, gate), kw) for pattern, cls, kw in sandbox.handlers]
    fake = ServerThread(lambda: tornado.web.Application(handlers), port=fake_port).start()
    ports = [free_port(), free_port()]
    env_file = write_env_file(
        tmp / "linkd.env",
        {
            "STATE_TOKEN_SECRET": SECRET,
            "LINKD_DATABASE_URL": url,
            "LINKD_PROVIDERS": "example",
            "LINKD_PUBLIC_URL": f"http://127.0.0.1:{ports[0]}",  # one public name: the load balancer's
            **sandbox.settings,
        },
    )
    c = Cluster(url, env_file, ports, [], sandbox.state, gate, [tmp / "a.log", tmp / "b.log"])
    c.procs = [None, None]  # type: ignore[list-item]
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(c.start, [0, 1]))  # both migrate the fresh database at once
        yield c
    finally:
        for proc in c.procs:
            if proc is not None:
                stop(proc)
        fake.stop()
    for log in c.logs:  # nothing either host logged carries the database password
        assert PASSWORD not in log.read_text(errors="replace")


def start_flow(c: Cluster, host: int, subject: str) -> tuple[Browser, str]:
    """Login on a host and consent at the fake; returns the browser and its (unvisited) callback URL."""
    c.subject(subject)
    browser = Browser("application/json")
    return browser, to_callback(browser, c.base(host) + "/example/login")


def status_or_error(browser: Browser, url: str) -> str:
    try:
        response = browser.get(url)
    except OSError as exc:  # the host died with the request in flight
        return type(exc).__name__
    return "answered" if response.status == 200 else str(response.status)


def on_host(url: str, c: Cluster, host: int) -> str:
    return urllib.parse.urlsplit(url)._replace(netloc=f"127.0.0.1:{c.ports[host]}").geturl()


def test_a_connect_started_on_a_completes_on_b(cluster: Cluster) -> None:
    browser, callback = start_flow(cluster, 0, "ab-user")
    response = browser.get(on_host(callback, cluster, 1))
    assert response.status == 200, response.text[:300]
    body = response.json()
    assert body["provider"] == "example" and body["user_uuid"]
    rows = sql(cluster.url, "SELECT provider FROM connections WHERE account_id = 'ab-user'")
    assert rows == [("example",)]
    # and the session cookie set by B is known to A: the next connect on A joins the same user
    cluster.subject("ab-user-2")
    second = browser.get(to_callback(browser, cluster.base(0) + "/example/login"))
    assert second.status == 200 and second.json()["user_uuid"] == body["user_uuid"]


def test_twenty_concurrent_replays_over_two_hosts_give_one_success(cluster: Cluster) -> None:
    exchanges_before = cluster.fake.counts.get("token", 0)
    browser, callback = start_flow(cluster, 0, "replay-user")
    cookie = browser.cookie("session_id")
    assert cookie is not None
    urls = [on_host(callback, cluster, i % 2) for i in range(20)]

    def fire(url: str) -> int:
        return Browser("application/json").get(url, headers={"Cookie": f"session_id={cookie.value}"}).status

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(fire, urls))
    assert statuses.count(200) == 1, statuses
    assert all(400 <= s < 500 for s in statuses if s != 200), statuses
    assert cluster.fake.counts.get("token", 0) - exchanges_before == 1  # one code exchange in all


REFRESH_SCRIPT = """
import asyncio, hashlib, json, sys
from linkd.config import load_settings
from linkd.service import build_services

async def main():
    services = await build_services(load_settings(sys.argv[1]))
    try:
        print("ready", flush=True)
        sys.stdin.readline()  # the barrier: both processes go at once
        row, tokens = await services.tokens.usable(int(sys.argv[2]))
        print(json.dumps({"token": hashlib.sha256(tokens.access_token.encode()).hexdigest()}), flush=True)
    finally:
        await services.close()

asyncio.run(main())
"""


def test_two_hosts_racing_to_refresh_one_expiring_token_spend_its_refresh_token_once(
    cluster: Cluster,
) -> None:
    browser, callback = start_flow(cluster, 0, "refresh-user")
    assert browser.get(callback).status == 200
    [(cid, sealed)] = sql(
        cluster.url, "SELECT id, tokens_sealed FROM connections WHERE account_id = 'refresh-user'"
    )
    # Make the stored token expire in a minute (inside the refresh margin), as time would.
    keyring, row_key = Keyring(SECRET), "connection:example:refresh-user"
    tokens = TokenSet.from_json(keyring.open(row_key, sealed))
    tokens.expires_at = time.time() + 60
    sql(
        cluster.url,
        "UPDATE connections SET tokens_sealed = %s WHERE id = %s",
        (keyring.seal(row_key, tokens.to_json()), cid),
    )
    refreshes_before = [r for r in cluster.fake.token_requests if r.get("grant_type") == "refresh_token"]

    procs = [python(REFRESH_SCRIPT, str(cluster.env_file), str(cid)) for _ in range(2)]
    release_together(procs)
    results = finish(procs)
    digests = [json.loads(out.strip().splitlines()[-1])["token"] for out, _ in results]
    refreshes = [r for r in cluster.fake.token_requests if r.get("grant_type") == "refresh_token"]
    # Spent once, whoever won: A, B and both hosts' background refresh jobs all go through the lease.
    assert len(refreshes) - len(refreshes_before) == 1
    assert refreshes[-1]["refresh_token"] == tokens.refresh_token
    newest = [t for t in cluster.fake.minted if t.startswith("at_")][-1]
    assert digests == [hashlib.sha256(newest.encode()).hexdigest()] * 2  # both got the one new token


def test_kill_9_of_a_mid_flow_loses_nothing_answered_as_linked_and_b_keeps_serving(cluster: Cluster) -> None:
    c = cluster
    answered: dict[str, str] = {}  # account -> user UUID, for every callback A answered as linked
    for i in range(3):
        browser, callback = start_flow(c, 0, f"kill-done-{i}")
        response = browser.get(callback)
        assert response.status == 200
        answered[f"kill-done-{i}"] = response.json()["user_uuid"]
    # Flows in the middle of their callback on A (A waits on the platform's token endpoint) ...
    held = [start_flow(c, 0, f"kill-held-{i}") for i in range(3)]
    # ... and flows whose person is still at the consent screen when A dies.
    pending = [start_flow(c, 0, f"kill-pending-{i}") for i in range(2)]
    c.gate.open.clear()
    pool = concurrent.futures.ThreadPoolExecutor(len(held))
    try:
        futures = [pool.submit(status_or_error, b, cb) for b, cb in held]
        for _ in held:
            assert c.gate.waiting.acquire(timeout=30), "A never reached the token endpoint"
        c.kill9(0)
        c.gate.open.set()
        statuses = [f.result(timeout=30) for f in futures]
    finally:
        c.gate.open.set()
        pool.shutdown(wait=True)
    assert "answered" not in statuses, statuses  # A died first: none of those was answered as linked

    rows = dict(sql(c.url, "SELECT account_id, user_id FROM connections WHERE account_id LIKE 'kill-%%'"))
    assert set(answered) <= set(rows)  # everything A answered as linked is in the database
    assert not any(a.startswith("kill-held") for a in rows)

    wait_healthy(c.base(1))  # B keeps serving: health, flows A started, and new flows
    for browser, callback in pending:
        response = browser.get(on_host(callback, c, 1))
        assert response.status == 200, response.text[:300]
    browser, callback = start_flow(c, 1, "kill-after")
    assert browser.get(on_host(callback, c, 1)).status == 200  # the public URL is A's: B stands in
    accounts = {
        r[0] for r in sql(c.url, "SELECT account_id FROM connections WHERE account_id LIKE 'kill-%%'")
    }
    assert {"kill-pending-0", "kill-pending-1", "kill-after", *answered} <= accounts
    c.start(0)  # A comes back and serves the same data
    done = Browser("application/json")
    assert done.get(c.base(0) + "/healthz").status == 200
