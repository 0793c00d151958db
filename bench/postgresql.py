"""PostgreSQL benchmark: connect flows/s and server CPU per flow, SQLite vs one and two PostgreSQL hosts.

Run from the checkout: `python bench/postgresql.py` (needs Debian's `postgresql` package,
the `test` and `bench` extras and the example plugin: `pip install -e '.[test,bench]'
./tests/example_plugin`). It starts everything itself on 127.0.0.1:

- a throw-away PostgreSQL cluster (`tests/pg.py`: fsync on, as in production);
- the fake platform (the example plugin's sandbox) in its own process, answering the
  server-to-server calls (token exchange, user info) after `--latency` seconds each;
- `linkd serve` processes (one worker each), on SQLite files or one PostgreSQL database;
- the load: `--concurrency` browsers in this process (aiohttp), each doing connect flows
  back to back: `GET /example/login` → the fake's consent → `GET /example/callback`
  (a new platform account, hence a new user, per flow). With two hosts every request
  goes to the next host in turn, so a flow's login and callback land on different hosts,
  as behind a load balancer without stickiness.

Scenarios: `sqlite` (one host), `pg1` (one host on PostgreSQL), `pg2` (two hosts on one
PostgreSQL). For each: flows/s in the measured window, errors, p50/p99 flow time, linkd's
CPU ms per flow (all linkd processes, from /proc) and PostgreSQL's own CPU ms per flow
(the postmaster's process tree), counted separately.

`--drivers` first measures the two ways to keep PostgreSQL off the event loop, on the
same transaction mix as a connect flow (insert state, consume it, read the session,
save the link, rotate the session), 64 concurrent callers: psycopg's `AsyncConnectionPool`
vs a sync `ConnectionPool` used from a thread pool (one executor hop per transaction, which
is what `linkd/store/postgresql.py` does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout (tests.pg), when run as `python bench/postgresql.py`
import procs  # noqa: E402 - bench/procs.py, beside this script

SECRET = "QmVuY2gtcG9zdGdyZXNxbC1zZWNyZXQtd2l0aC1lbm91Z2gtZW50cm9weS0yMDI2"


# process CPU from /proc ---------------------------------------------------------------------------
def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these process trees, in seconds (exited children are not counted)."""
    return sum(procs.cpu_seconds(root) for root in pids)


# the fake platform, in its own process --------------------------------------------------------------
def serve_fake(port: int, latency: float) -> None:
    """The example plugin's sandbox with upstream latency and a new platform account per consent."""
    import itertools

    import linkd_example
    import tornado.web

    sandbox = linkd_example.ExampleProvider.sandbox(f"http://127.0.0.1:{port}/oauth")
    fake = sandbox.state
    subjects = itertools.count(1)
    run_id = secrets.token_hex(3)

    def slow(handler: type[tornado.web.RequestHandler]) -> type[tornado.web.RequestHandler]:
        class Slow(handler):  # type: ignore[valid-type,misc]
            async def prepare(self) -> None:
                result = super().prepare()  # the fake counts requests there
                if result is not None:
                    await result
                path = self.request.path
                if path.endswith("/authorize"):
                    fake.next_subject = f"bench-{run_id}-{next(subjects)}"  # read by the handler next
                elif latency:
                    await asyncio.sleep(latency)  # token exchange, user info: the platform's latency

        return Slow

    handlers = [("/oauth" + pattern, slow(cls), kw) for pattern, cls, kw in sandbox.handlers]

    async def main() -> None:
        app = tornado.web.Application(handlers)
        app.listen(port, "127.0.0.1")
        print("READY " + json.dumps(sandbox.settings), flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()

    asyncio.run(main())


def postmaster_pid(server: Any) -> int:
    return int((server.data / "postmaster.pid").read_text().split()[0])


# starting things --------------------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_fake(latency: float) -> tuple[subprocess.Popen[str], int, dict[str, str]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-fake", str(port), "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        raise RuntimeError("the fake platform did not start")
    return proc, port, json.loads(line[6:])


def start_linkd(env: dict[str, str], port: int, workdir: Path) -> subprocess.Popen[bytes]:
    from tests.processes import start_linkd as start
    from tests.processes import write_env_file

    env_file = write_env_file(workdir / f"linkd-{port}.env", env)
    log = (workdir / f"linkd-{port}.log").open("ab")
    try:
        return start(env_file, port, stderr=log)
    finally:
        log.close()


def stop_all(procs: list[subprocess.Popen[Any]], group: bool = True) -> None:
    """SIGTERM (to the whole process group for `linkd serve`: supervisor and workers), then wait."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if group:
                    os.killpg(proc.pid, signal.SIGTERM)
                else:
                    proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


# the load -----------------------------------------------------------------------------------------------
class FlowFailed(Exception):
    pass


async def one_flow(http: Any, bases: list[str], turn: list[int], fake_netloc: str) -> None:
    """Login → consent at the fake → callback; each linkd request to the next host in turn."""
    cookies: dict[str, str] = {}

    async def get(url: str) -> tuple[int, str]:
        parts = urllib.parse.urlsplit(url)
        ours = parts.netloc != fake_netloc
        headers = {"Accept": "application/json"}
        if ours:
            base = bases[turn[0] % len(bases)]
            turn[0] += 1
            url = base + parts.path + (f"?{parts.query}" if parts.query else "")
            if cookies:
                headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        async with http.get(url, headers=headers, allow_redirects=False) as r:
            await r.read()
            if ours:
                for raw in r.headers.getall("Set-Cookie", []):
                    jar: SimpleCookie = SimpleCookie()
                    jar.load(raw)
                    for name, morsel in jar.items():
                        if morsel["max-age"] == "0" or not morsel.value:
                            cookies.pop(name, None)
                        else:
                            cookies[name] = morsel.value
            return r.status, r.headers.get("Location", "")

    status, location = await get(bases[0] + "/example/login")
    for _ in range(4):
        if status not in (302, 303) or not location:
            break
        status, location = await get(location)
    if status != 200:
        raise FlowFailed(str(status))


async def load(
    bases: list[str],
    fake_port: int,
    concurrency: int,
    warmup: float,
    duration: float,
    cpu_pids: dict[str, list[int]],
) -> dict[str, Any]:
    import aiohttp

    loop = asyncio.get_running_loop()
    turn = [0]
    stop = False
    window: list[float] = []
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    marks: dict[str, dict[str, float]] = {}
    fake_netloc = f"127.0.0.1:{fake_port}"

    def mark(name: str) -> None:
        marks[name] = {k: cpu_seconds(v) for k, v in cpu_pids.items()}
        marks[name]["client"] = time.process_time()

    async def worker(http: Any) -> None:
        while not stop:
            begin = loop.time()
            try:
                await one_flow(http, bases, turn, fake_netloc)
            except (FlowFailed, aiohttp.ClientError, TimeoutError) as exc:
                if len(window) == 1:
                    errors[str(exc) or type(exc).__name__] += 1
            else:
                if len(window) == 1 and begin >= window[0]:
                    latencies.append(loop.time() - begin)

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    ) as http:
        tasks = [asyncio.create_task(worker(http)) for _ in range(concurrency)]
        await asyncio.sleep(warmup)
        mark("start")
        window.append(loop.time())
        await asyncio.sleep(duration)
        mark("end")
        window.append(loop.time())
        stop = True
        await asyncio.wait(tasks, timeout=60)
    measured = window[1] - window[0]
    flows = len(latencies)
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else float("nan")

    cpu = {k: marks["end"][k] - marks["start"][k] for k in marks["start"]}
    return {
        "flows_per_s": flows / measured,
        "flows": flows,
        "errors": dict(errors),
        "p50_ms": 1000 * pct(0.5),
        "p99_ms": 1000 * pct(0.99),
        "linkd_cpu_ms_per_flow": 1000 * cpu["linkd"] / flows if flows else None,
        "postgres_cpu_ms_per_flow": 1000 * cpu["postgres"] / flows if flows and "postgres" in cpu else None,
        "linkd_cpu_cores": cpu["linkd"] / measured,
        "postgres_cpu_cores": cpu.get("postgres", 0.0) / measured,
        "fake_cpu_cores": cpu["fake"] / measured,
        "client_cpu_cores": cpu["client"] / measured,
    }


def scenario(name: str, args: argparse.Namespace, server: Any, workdir: Path) -> dict[str, Any]:
    fake, fake_port, fake_settings = start_fake(args.latency)
    hosts = 2 if name == "pg2" else 1
    ports = [free_port() for _ in range(hosts)]
    env = {
        "STATE_TOKEN_SECRET": SECRET,
        "LINKD_PROVIDERS": "example",
        "LINKD_PUBLIC_URL": f"http://127.0.0.1:{ports[0]}",
        "LINKD_LOG_LEVEL": "WARNING",
        "LINKD_WORKERS": "1",
        **fake_settings,
    }
    if name == "sqlite":
        data = workdir / f"sqlite-{secrets.token_hex(3)}"
        env.update(SESSION_DB_PATH=str(data / "sessions.db"), TOKEN_DB_PATH=str(data / "tokens.db"))
    else:
        env["LINKD_DATABASE_URL"] = server.new_database()
    procs: list[subprocess.Popen[Any]] = [fake]
    try:
        for port in ports:
            procs.append(start_linkd(env, port, workdir))
        cpu_pids = {"linkd": [p.pid for p in procs[1:]], "fake": [fake.pid]}
        if name != "sqlite":
            cpu_pids["postgres"] = [postmaster_pid(server)]
        bases = [f"http://127.0.0.1:{p}" for p in ports]
        result = asyncio.run(load(bases, fake_port, args.concurrency, args.warmup, args.duration, cpu_pids))
    finally:
        stop_all(procs[1:])
        stop_all(procs[:1], group=False)
    result["hosts"] = hosts
    return result


# async driver vs sync pool in an executor -----------------------------------------------------------------
DRIVER_SCHEMA = """
DROP TABLE IF EXISTS b_states, b_sessions, b_conns, b_users;
CREATE TABLE b_states (state_hash text COLLATE "C" PRIMARY KEY, session_hash text, provider text,
    payload text, created_at float8, expires_at float8);
CREATE TABLE b_sessions (id_hash text COLLATE "C" PRIMARY KEY, user_sealed text, created_at float8,
    expires_at float8);
CREATE TABLE b_users (id text COLLATE "C" PRIMARY KEY, uuid_hash text UNIQUE, uuid_sealed text,
    created_at float8);
CREATE TABLE b_conns (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    user_id text REFERENCES b_users ON DELETE CASCADE, provider text, account_id text, parent_id bigint,
    tokens text, created_at float8, updated_at float8, UNIQUE (provider, account_id));
"""
SEALED = "x" * 300  # about the size of a sealed token set
STEPS: list[list[tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]], str]]] = [
    [
        (
            "INSERT INTO b_states VALUES (%s, %s, 'example', %s, %s, %s)",
            lambda v: (v["st"], v["se"], SEALED, v["now"], v["now"] + 300),
            "",
        )
    ],
    [("DELETE FROM b_states WHERE state_hash = ANY(%s) RETURNING *", lambda v: ([v["st"]],), "all")],
    [("SELECT * FROM b_sessions WHERE id_hash = ANY(%s)", lambda v: ([v["se"]],), "all")],
    [
        (
            "SELECT user_id FROM b_conns WHERE provider = 'example' AND account_id = %s",
            lambda v: (v["acct"],),
            "one",
        ),
        ("SELECT * FROM b_users WHERE uuid_hash = ANY(%s) LIMIT 1", lambda v: ([v["uid"]],), "one"),
        ("INSERT INTO b_users VALUES (%s, %s, %s, %s)", lambda v: (v["uid"], v["uid"], SEALED, v["now"]), ""),
        (
            "INSERT INTO b_conns (user_id, provider, account_id, tokens, created_at, updated_at) "
            "VALUES (%s, 'example', %s, %s, %s, %s) ON CONFLICT (provider, account_id) DO UPDATE "
            "SET tokens = excluded.tokens WHERE b_conns.user_id = excluded.user_id RETURNING id",
            lambda v: (v["uid"], v["acct"], SEALED, v["now"], v["now"]),
            "one",
        ),
        ("SELECT * FROM b_conns WHERE account_id = %s", lambda v: (v["acct"],), "one"),
    ],
    [
        ("DELETE FROM b_sessions WHERE id_hash = %s", lambda v: (v["se"],), ""),
        (
            "INSERT INTO b_sessions VALUES (%s, %s, %s, %s)",
            lambda v: (v["se"], SEALED, v["now"], v["now"] + 3600),
            "",
        ),
    ],
]


def _values() -> dict[str, Any]:
    return {
        "now": time.time(),
        "st": secrets.token_hex(22),
        "se": secrets.token_hex(22),
        "acct": secrets.token_hex(8),
        "uid": secrets.token_hex(12),
    }


def _sync_step(pool: Any, step: list[tuple[str, Any, str]], v: dict[str, Any]) -> None:
    with pool.connection() as conn:
        ctx = conn.transaction() if len(step) > 1 else contextlib.nullcontext()
        with ctx:
            for sql, args, fetch in step:
                cur = conn.execute(sql, args(v))
                if fetch == "all":
                    cur.fetchall()
                elif fetch == "one":
                    cur.fetchone()


async def _async_step(pool: Any, step: list[tuple[str, Any, str]], v: dict[str, Any]) -> None:
    async with pool.connection() as conn:
        ctx = conn.transaction() if len(step) > 1 else contextlib.nullcontext()
        async with ctx:
            for sql, args, fetch in step:
                cur = await conn.execute(sql, args(v))
                if fetch == "all":
                    await cur.fetchall()
                elif fetch == "one":
                    await cur.fetchone()


async def driver_run(
    url: str, mode: str, size: int, concurrency: int, duration: float, pg_pid: int
) -> dict[str, Any]:
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

    loop = asyncio.get_running_loop()
    kwargs = {"autocommit": True}
    one: Callable[[], Awaitable[None]]
    if mode == "async":
        apool = AsyncConnectionPool(url, min_size=size, max_size=size, kwargs=kwargs, open=False)
        await apool.open(wait=True)

        async def one() -> None:
            v = _values()
            for step in STEPS:
                await _async_step(apool, step, v)

        closer: Callable[[], Awaitable[None]] = apool.close
    else:
        spool = ConnectionPool(url, min_size=size, max_size=size, kwargs=kwargs, open=True)
        spool.wait()
        executor = ThreadPoolExecutor(size)

        async def one() -> None:
            v = _values()
            for step in STEPS:
                await loop.run_in_executor(executor, functools.partial(_sync_step, spool, step, v))

        async def closer() -> None:
            executor.shutdown()
            spool.close()

    done = 0
    stop_at = 0.0

    async def worker() -> None:
        nonlocal done
        while loop.time() < stop_at:
            await one()
            done += 1

    stop_at = loop.time() + 1.0  # warm-up (statements get prepared after 5 uses per connection)
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    done = 0
    c0, p0, t0 = time.process_time(), cpu_seconds([pg_pid]), loop.time()
    stop_at = t0 + duration
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    c1, p1, t1 = time.process_time(), cpu_seconds([pg_pid]), loop.time()
    await closer()
    return {
        "mode": mode,
        "pool": size,
        "flows_per_s": done / (t1 - t0),
        "client_cpu_ms_per_flow": 1000 * (c1 - c0) / done,
        "postgres_cpu_ms_per_flow": 1000 * (p1 - p0) / done,
    }


def drivers(args: argparse.Namespace, server: Any) -> list[dict[str, Any]]:
    import psycopg

    url = server.new_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(DRIVER_SCHEMA)
    results = []
    for _ in range(args.rounds):
        for size in (8, 16):
            for mode in ("async", "executor"):
                results.append(
                    asyncio.run(driver_run(url, mode, size, 64, args.driver_duration, postmaster_pid(server)))
                )
    return results


# report -----------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per server-to-server call")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per scenario")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--scenarios", default="sqlite,pg1,pg2")
    parser.add_argument("--drivers", action="store_true", help="also compare the async API with an executor")
    parser.add_argument("--drivers-only", action="store_true")
    parser.add_argument("--driver-duration", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=2, help="driver comparison rounds (alternating)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--serve-fake", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake:
        serve_fake(args.serve_fake, args.latency)
        return

    from tests.pg import PostgresServer, find_bindir

    bindir = find_bindir()
    if bindir is None:
        sys.exit("PostgreSQL server binaries not found: apt-get install postgresql (or set PGBIN)")
    server = PostgresServer(bindir).start()
    workdir = Path(server.root).parent / f"linkd-bench-{secrets.token_hex(3)}"
    workdir.mkdir(mode=0o700)
    out: dict[str, Any] = {"cpus": os.cpu_count(), "load_before": os.getloadavg()}
    try:
        if args.drivers or args.drivers_only:
            out["drivers"] = drivers(args, server)
            print("driver comparison (connect-flow transaction mix, 64 concurrent callers):")
            for r in out["drivers"]:
                print(
                    f"  {r['mode']:<9} pool={r['pool']:<3} {r['flows_per_s']:7.0f} flows/s   "
                    f"client CPU {r['client_cpu_ms_per_flow']:5.2f} ms/flow   "
                    f"PostgreSQL CPU {r['postgres_cpu_ms_per_flow']:5.2f} ms/flow"
                )
        if not args.drivers_only:
            out["scenarios"] = {}
            for name in args.scenarios.split(","):
                out["scenarios"][name] = result = scenario(name, args, server, workdir)
                pg = result["postgres_cpu_ms_per_flow"]
                print(
                    f"{name:<6} hosts={result['hosts']}  {result['flows_per_s']:6.1f} flows/s  "
                    f"errors={sum(result['errors'].values())}  p50={result['p50_ms']:.0f} ms  "
                    f"p99={result['p99_ms']:.0f} ms  linkd CPU {result['linkd_cpu_ms_per_flow']:.2f} ms/flow"
                    + (f"  PostgreSQL CPU {pg:.2f} ms/flow" if pg is not None else "")
                    + f"  (cores busy: linkd {result['linkd_cpu_cores']:.2f},"
                    f" postgres {result['postgres_cpu_cores']:.2f}, fake {result['fake_cpu_cores']:.2f},"
                    f" client {result['client_cpu_cores']:.2f})",
                    flush=True,
                )
            s = out["scenarios"]
            if {"sqlite", "pg1"} <= s.keys():
                ratio = s["pg1"]["linkd_cpu_ms_per_flow"] / s["sqlite"]["linkd_cpu_ms_per_flow"]
                print(f"linkd CPU per flow, PostgreSQL / SQLite: {ratio:.2f}x (target <= 1.5x)")
            if {"pg1", "pg2"} <= s.keys():
                scale = s["pg2"]["flows_per_s"] / s["pg1"]["flows_per_s"]
                print(
                    f"two hosts / one host: {scale:.2f}x "
                    f"(target >= 1.6x where the cores allow; {os.cpu_count()} cores here)"
                )
            errors = sum(sum(r["errors"].values()) for r in s.values())
            print(f"errors in all scenarios: {errors}")
    finally:
        server.stop()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    out["load_after"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
