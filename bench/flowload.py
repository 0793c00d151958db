"""Load client for connect flows: complete Shopify → Facebook connects with aiohttp, N at a time.

One flow is what a browser does: `GET /shopify/{shop}/login` → the fake's consent
(auto-approved) → the callback → `GET /facebook/login` with the session cookie → the
fake's dialog → the callback; redirects followed by hand, cookies kept per flow and
sent to the server only. Each flow uses a new shop (and the fake answers each dialog
as a new Facebook user), so every flow creates a new profile.

Run as its own process, pinned to the load core:
`python bench/flowload.py --base URL --concurrency 64 --duration 8 --warmup 2 --server-pid PID`
prints one JSON object: flows completed in the measured window, errors, flow latencies,
and the CPU seconds the server (and the fake, and this client) used in that window.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import urllib.parse
from collections import Counter
from http.cookies import SimpleCookie
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import cpu_seconds

MAX_HOPS = 4


class FlowError(Exception):
    def __init__(self, where: str) -> None:
        super().__init__(where)
        self.where = where


class Flow:
    """One browser: a cookie jar for the server under test, nothing for the fake."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base
        self.netloc = urllib.parse.urlsplit(base).netloc
        self.cookies: dict[str, str] = {}

    async def get(self, url: str) -> tuple[int, str | None]:
        headers = {"Accept": "application/json"}
        ours = urllib.parse.urlsplit(url).netloc == self.netloc
        if ours and self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        async with self.http.get(url, headers=headers, allow_redirects=False) as r:
            await r.read()
            if ours:
                for raw in r.headers.getall("Set-Cookie", []):
                    self._remember(raw)
            return r.status, r.headers.get("Location")

    def _remember(self, raw: str) -> None:
        jar: SimpleCookie = SimpleCookie()
        jar.load(raw)
        for name, morsel in jar.items():
            if morsel["max-age"] == "0" or not morsel.value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = morsel.value

    async def connect(self, login_url: str, step: str) -> None:
        """Login → consent → callback; the callback must answer 200."""
        status, location = await self.get(login_url)
        for _ in range(MAX_HOPS):
            if status not in (301, 302, 303, 307, 308) or not location:
                break
            status, location = await self.get(urllib.parse.urljoin(self.base, location))
        if status != 200:
            raise FlowError(f"{step}:{status}")


async def one_flow(http: aiohttp.ClientSession, base: str, shop: str) -> None:
    flow = Flow(http, base)
    await flow.connect(f"{base}/shopify/{shop}/login", "shopify")
    await flow.connect(f"{base}/facebook/login", "facebook")


async def run(args: argparse.Namespace) -> dict[str, object]:
    """Warm up until every worker has finished a flow (and `warmup` s passed), then measure `duration` s."""
    connector = aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True)
    timeout = aiohttp.ClientTimeout(total=args.flow_timeout)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    window: list[float] = []  # [start, end] once known
    stop = False
    done_once: set[int] = set()
    warm = asyncio.Event()
    latencies: list[float] = []
    warm_latencies: list[float] = []
    errors: Counter[str] = Counter()
    marks: dict[str, dict[str, float]] = {}

    def mark(name: str) -> None:
        marks[name] = {"server": cpu_seconds(args.server_pid), "client": time.process_time()}
        if args.fake_pid:
            marks[name]["fake"] = cpu_seconds(args.fake_pid)

    def in_window(t: float) -> bool:
        return len(window) == 2 and window[0] <= t <= window[1]

    async def worker(http: aiohttp.ClientSession, index: int) -> None:
        # starts spread over the warm-up, so flows do not complete in synchronised waves
        await asyncio.sleep(args.warmup * index / args.concurrency)
        n = 0
        while not stop:
            shop = f"{args.shop_prefix}{index}x{n}"
            n += 1
            begin = loop.time()
            try:
                await one_flow(http, args.base, shop)
            except (TimeoutError, FlowError, aiohttp.ClientError) as exc:
                if window and begin >= window[0] and (len(window) == 1 or begin <= window[1]):
                    errors[exc.where if isinstance(exc, FlowError) else type(exc).__name__] += 1
            else:
                end = loop.time()
                if window and end >= window[0] and (len(window) == 1 or end <= window[1]):
                    latencies.append(end - begin)
                elif not window:
                    warm_latencies.append(end - begin)
            done_once.add(index)
            if len(done_once) == args.concurrency and loop.time() - t0 >= args.warmup:
                warm.set()

    async def clock() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(warm.wait(), args.max_warmup)
        await asyncio.sleep(max(0.0, t0 + args.warmup - loop.time()))
        mark("start")
        window.append(loop.time())
        # at least two flow times long, or slow flows are counted in one wave or none
        typical = sorted(warm_latencies)[len(warm_latencies) // 2] if warm_latencies else 0.0
        await asyncio.sleep(min(max(args.duration, 2 * typical), args.max_duration))
        mark("end")
        window.append(loop.time())

    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    ) as http:
        tasks = [asyncio.create_task(worker(http, i)) for i in range(args.concurrency)]
        await clock()
        stop = True
        # in-flight flows finish (uncounted) so the next measurement starts on a quiet server
        _, pending = await asyncio.wait(tasks, timeout=args.drain)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    latencies.sort()
    measured = window[1] - window[0]

    def pct(p: float) -> float | None:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else None

    cpu = {k: marks["end"][k] - marks["start"][k] for k in marks["start"]}
    return {
        "flows": len(latencies),
        "flows_per_s": len(latencies) / measured,
        "errors": dict(errors),
        "p50_s": pct(0.50),
        "p99_s": pct(0.99),
        "server_cpu_s": cpu["server"],
        "server_cpu_ms_per_flow": 1000 * cpu["server"] / len(latencies) if latencies else None,
        "client_cpu_s": cpu["client"],
        "fake_cpu_s": cpu.get("fake"),
        "warmup_s": window[0] - t0,
        "duration_s": measured,
        "undrained": len(pending),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="complete connect flows against one server")
    parser.add_argument("--base", required=True, help="http://127.0.0.1:PORT of the server under test")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="at least this many seconds of warm-up")
    parser.add_argument(
        "--max-warmup",
        type=float,
        default=30.0,
        help="at most this long waiting for every worker's first flow",
    )
    parser.add_argument(
        "--max-duration", type=float, default=30.0, help="the window grows to 2 flow times, up to this"
    )
    parser.add_argument("--drain", type=float, default=30.0, help="seconds in-flight flows may take after it")
    parser.add_argument("--flow-timeout", type=float, default=60.0)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--fake-pid", type=int, default=0)
    parser.add_argument("--shop-prefix", default=f"b{os.getpid()}")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
