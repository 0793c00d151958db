"""linkd's benchmark against the app it replaces: one command, every server started here, on loopback.

    python bench/run.py               # the full run (3 rounds, about 20 minutes)
    python bench/run.py --quick       # a smoke test: 1 round, short windows (under 2 minutes)
    python bench/run.py --only login,store --rounds 5

Servers measured: linkd (`linkd serve`, one worker), the original FastAPI app in its two
variants (a new httpx client per provider call, as the tutorial writes it, and one shared
client), and, as ceilings, a bare Tornado "hello world" and a bare Tornado 302 + HMAC.
All provider traffic goes to ONE fake-platform process (`bench/fake_provider.py`: linkd's
own Shopify and Facebook sandboxes) shared by every server. Servers run pinned to
`--server-cpu`, load generators and the fake to `--load-cpu`. Workloads alternate
between servers inside each round, and the order rotates from round to round.

Prints the tables (medians, min–max over rounds, ratios linkd ÷ peer, targets) and writes
`bench/results/bench-<time>.json` (every sample) and `bench/results/latest.md`;
`--update-readme` also puts the tables into `bench/README.md`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyspy as profiling
import report
import servers
import wrk
from procs import Server, memory_mb, pinned, tree
from report import Metric, Samples

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
README = BENCH / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
WORKLOADS = ("login", "flow", "store", "footprint", "ceiling")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def rotate(items: list[Any], by: int) -> list[Any]:
    by %= max(1, len(items))
    return items[by:] + items[:by]


# -- metrics -------------------------------------------------------------------------------------------
def login_metrics(c: int) -> dict[str, Metric]:
    w = f"login c={c}"
    return {
        "rps": Metric(f"login.rps.c{c}", w, "GET /facebook/login with a session", "requests/s", True),
        "p50": Metric(f"login.p50.c{c}", w, "latency p50", "ms", False, 2),
        "p99": Metric(f"login.p99.c{c}", w, "latency p99", "ms", False, 2),
        "cpu": Metric(f"login.cpu.c{c}", w, "server CPU per request", "µs", False),
        "busy": Metric(f"login.busy.c{c}", w, "server CPU busy (of one core)", "%", False),
        "errors": Metric(f"login.errors.c{c}", w, "non-3xx answers + socket errors", "count", False),
    }


def flow_metrics(latency_ms: int, c: int) -> dict[str, Metric]:
    w = f"flow c={c}, provider {latency_ms} ms"
    k = f"flow.lat{latency_ms}.c{c}"
    return {
        "rate": Metric(f"{k}.rate", w, "Shopify → Facebook connects completed", "flows/s", True, 1),
        "p50": Metric(f"{k}.p50", w, "flow latency p50", "s", False, 3),
        "p99": Metric(f"{k}.p99", w, "flow latency p99", "s", False, 3),
        "cpu": Metric(f"{k}.cpu", w, "server CPU per flow", "ms", False, 1),
        "busy": Metric(f"{k}.busy", w, "server CPU busy (of one core)", "%", False),
        "errors": Metric(f"{k}.errors", w, "failed flows", "count", False),
    }


def store_metrics(procs: int, concurrency: int = 1) -> dict[str, Metric]:
    w = f"store, {procs} process{'es' if procs > 1 else ''}" + (
        f", {concurrency} in flight" if concurrency > 1 else ""
    )
    suffix = f"p{procs}" + (f".c{concurrency}" if concurrency > 1 else "")
    return {
        "create": Metric(f"store.create.{suffix}", w, "session creates", "ops/s", True),
        "read": Metric(f"store.read.{suffix}", w, "session reads", "ops/s", True),
        "delete": Metric(f"store.delete.{suffix}", w, "session deletes", "ops/s", True),
        "errors": Metric(f"store.errors.{suffix}", w, "errors", "count", False),
    }


FOOTPRINT = {
    "start": Metric("footprint.start", "footprint", "start to first 200", "s", False, 3),
    "rss_idle": Metric("footprint.rss_idle", "footprint", "RSS idle, all processes", "MB", False, 1),
    "pss_idle": Metric("footprint.pss_idle", "footprint", "PSS idle, all processes", "MB", False, 1),
    "rss_after": Metric("footprint.rss_after", "footprint", "RSS after the flow workload", "MB", False, 1),
    "pss_after": Metric("footprint.pss_after", "footprint", "PSS after the flow workload", "MB", False, 1),
}
CEIL_HELLO = {
    c: Metric(f"ceiling.hello.c{c}", "ceiling", f"Tornado hello world, c={c}", "requests/s", True)
    for c in (1, 16, 64)
}
CEIL_302 = {
    c: Metric(f"ceiling.302.c{c}", "ceiling", f"Tornado 302 + HMAC, c={c}", "requests/s", True)
    for c in (1, 16, 64)
}
CEIL_302_CPU = {
    c: Metric(f"ceiling.302cpu.c{c}", "ceiling", f"Tornado 302 + HMAC, c={c}: CPU per request", "µs", False)
    for c in (1, 16, 64)
}
CEIL_SQLITE = {
    "normal": Metric(
        "ceiling.sqlite.normal", "ceiling", "SQLite WAL commits, synchronous=NORMAL", "commits/s", True
    ),
    "full": Metric(
        "ceiling.sqlite.full", "ceiling", "SQLite WAL commits, synchronous=FULL", "commits/s", True
    ),
}


def ingest(samples: Samples, e: dict[str, Any]) -> None:
    """The figures of one raw record (as kept in the JSON file) into the samples of the tables."""
    name, kind = e["server"], e["kind"]
    if kind == "login":
        c = e["connections"]
        cpu = e.get("server_cpu_us_per_request")
        if name == "tornado_hello":
            samples.add(CEIL_HELLO[c], name, e["rps"])
        elif name == "tornado_302_hmac":
            samples.add(CEIL_302[c], name, e["rps"])
            samples.add(CEIL_302_CPU[c], name, cpu)
        else:
            m = login_metrics(c)
            samples.add(m["rps"], name, e["rps"])
            samples.add(m["p50"], name, 1000 * e["p50_s"] if "p50_s" in e else None)
            samples.add(m["p99"], name, 1000 * e["p99_s"] if "p99_s" in e else None)
            samples.add(m["cpu"], name, cpu)
            samples.add(m["busy"], name, e["rps"] * cpu / 1e4 if cpu is not None else None)
            samples.add(m["errors"], name, e["errors"] + e["socket_errors"])
    elif kind == "flow":
        m = flow_metrics(e["latency_ms"], e["concurrency"])
        samples.add(m["rate"], name, e["flows_per_s"])
        samples.add(m["p50"], name, e["p50_s"])
        samples.add(m["p99"], name, e["p99_s"])
        samples.add(m["cpu"], name, e["server_cpu_ms_per_flow"])
        samples.add(m["busy"], name, 100 * e["server_cpu_s"] / e["duration_s"])
        samples.add(m["errors"], name, sum(e["errors"].values()))
    elif kind == "store":
        m = store_metrics(e["procs"], e["concurrency"])
        for phase in ("create", "read", "delete"):
            samples.add(m[phase], name, e[phase]["per_s"])
        samples.add(m["errors"], name, sum(e[p]["errors"] for p in ("create", "read", "delete")))
    elif kind == "ceiling":
        samples.add(CEIL_SQLITE["normal"], name, e["commits_per_s_normal"])
        samples.add(CEIL_SQLITE["full"], name, e["commits_per_s_full"])
    elif kind == "footprint" and e["phase"] == "idle":
        samples.add(FOOTPRINT["start"], name, e["ready_after_s"])
        samples.add(FOOTPRINT["rss_idle"], name, e["rss_mb"])
        samples.add(FOOTPRINT["pss_idle"], name, e["pss_mb"])
    elif kind == "footprint":
        samples.add(FOOTPRINT["rss_after"], name, e["rss_mb"])
        samples.add(FOOTPRINT["pss_after"], name, e["pss_mb"])


# -- the run -------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.samples = Samples()
        self.raw: list[dict[str, Any]] = []
        self.workdir = Path(tempfile.mkdtemp(prefix="linkd-bench-"))
        self.fake: Server | None = None
        self.fake_settings: dict[str, str] = {}
        self.running: list[Server] = []
        self.profiled: dict[tuple[str, str], Path] = {}

    def record(self, kind: str, server: str, round_: int, **data: Any) -> None:
        entry = {"kind": kind, "server": server, "round": round_, **data}
        self.raw.append(entry)
        ingest(self.samples, entry)

    def profile_start(self, name: str, server: Server, cell: str, seconds: float) -> Any:
        """py-spy on linkd's serving process for this cell (first round only, with --profile)."""
        if not self.args.profile or not name.startswith("linkd") or cell not in self.args.profile_cells:
            return None
        if self.profiled.get((name, cell)):
            return None
        self.profiled[(name, cell)] = RESULTS / f"profile-{name}-{cell}.txt"
        workers = tree(server.pid)[1:]  # linkd serves from its forked worker
        RESULTS.mkdir(exist_ok=True)
        return profiling.start(workers[0] if workers else server.pid, seconds, self.profiled[(name, cell)])

    # servers ------------------------------------------------------------------------------------------
    def start(self, name: str, round_: int) -> Server:
        a = self.args
        rdir = self.workdir / f"round{round_}-{name}"
        rdir.mkdir()
        if name in ("linkd", "linkd_b"):
            server = servers.start_linkd(
                rdir,
                self.fake_settings,
                a.server_cpu,
                a.linkd_log_level,
                src=a.compare_src if name == "linkd_b" else None,
                name=name,
                extra=a.compare_env if name == "linkd_b" else None,
            )
        elif name in ("peer_tutorial", "peer_shared"):
            server = servers.start_peer(
                rdir,
                self.fake_settings,
                a.server_cpu,
                shared_client=name == "peer_shared",
                peer_dir=a.peer_dir,
                venv=a.peer_venv,
            )
        else:
            kind = servers.HELLO if name == "tornado_hello" else servers.REDIRECT
            server = servers.start_ceiling(rdir, kind, a.server_cpu)
        self.running.append(server)
        return server

    def stop(self, server: Server) -> None:
        server.stop()
        if server in self.running:
            self.running.remove(server)

    def stop_all(self) -> None:
        for server in list(self.running):
            self.stop(server)
        if self.fake is not None:
            self.fake.stop()
            self.fake = None

    # workloads ----------------------------------------------------------------------------------------------
    def login(self, name: str, server: Server, cookie: str | None, c: int, round_: int) -> None:
        a = self.args
        path = "/" if name == "tornado_hello" else "/facebook/login"
        headers = {"Cookie": cookie} if cookie else None
        spy = self.profile_start(name, server, f"login-c{c}", a.login_warmup + a.login_seconds)
        result = wrk.run(
            server.url + path,
            c,
            a.login_seconds,
            cpu=a.load_cpu,
            headers=headers,
            server_pid=server.pid,
            warmup=a.login_warmup,
        )
        if spy is not None:
            spy.wait()
        self.record("login", name, round_, connections=c, **result)
        log(
            f"  login c={c:<3} {name:<17} {result['rps']:>9,.0f} req/s  "
            f"p99 {1000 * result.get('p99_s', 0):.1f} ms"
        )

    def flow(self, name: str, server: Server, latency_ms: int, c: int, round_: int) -> None:
        a = self.args
        assert self.fake is not None
        cmd = [
            sys.executable,
            str(BENCH / "flowload.py"),
            "--base",
            server.url,
            "--concurrency",
            str(c),
            "--duration",
            str(a.flow_seconds),
            "--warmup",
            str(a.flow_warmup),
            "--max-warmup",
            str(a.flow_max_warmup),
            "--max-duration",
            str(a.flow_max_duration),
            "--server-pid",
            str(server.pid),
            "--fake-pid",
            str(self.fake.pid),
            "--shop-prefix",
            f"r{round_}l{latency_ms}c{c}n",
        ]
        spy = self.profile_start(name, server, f"flow-{latency_ms}ms-c{c}", a.flow_warmup + a.flow_seconds)
        out = subprocess.run(pinned(cmd, a.load_cpu), capture_output=True, text=True, check=True).stdout
        if spy is not None:
            spy.wait()
        result = json.loads(out)
        self.record("flow", name, round_, latency_ms=latency_ms, concurrency=c, **result)
        cpu = result["server_cpu_ms_per_flow"]
        log(
            f"  flow {latency_ms:>3} ms c={c:<3} {name:<14} {result['flows_per_s']:>7.1f} flows/s  "
            f"cpu {cpu if cpu is None else round(cpu, 1)} ms/flow  errors {sum(result['errors'].values())}"
            f"  (server {result['server_cpu_s']:.1f}s fake {result['fake_cpu_s'] or 0:.1f}s "
            f"client {result['client_cpu_s']:.1f}s cpu in {result['duration_s']:.1f}s)"
        )

    def store(self, name: str, procs: int, concurrency: int, round_: int) -> None:
        a = self.args
        db_dir = self.workdir / f"store-r{round_}-{name}-p{procs}-c{concurrency}"
        is_linkd = name in ("linkd", "linkd_b")
        python = sys.executable if is_linkd else str(a.peer_venv / "bin" / "python")
        cmd = [
            python,
            str(BENCH / "store_load.py"),
            "linkd" if is_linkd else "peer",
            "--db-dir",
            str(db_dir),
            "--procs",
            str(procs),
            "--concurrency",
            str(concurrency),
            "--seconds",
            str(a.store_seconds),
            "--peer-dir",
            str(a.peer_dir),
            "--src",
            str(a.compare_src) if name == "linkd_b" else "",
        ]
        cpu = a.server_cpu if procs == 1 else None  # N processes use every core
        out = subprocess.run(pinned(cmd, cpu), capture_output=True, text=True, check=True).stdout
        result = json.loads(out)
        self.record("store", name, round_, **result)
        log(
            f"  store p={procs} c={concurrency:<2} {name:<14} create {result['create']['per_s']:>7,.0f}/s  "
            f"read {result['read']['per_s']:>7,.0f}/s  delete {result['delete']['per_s']:>7,.0f}/s  "
            f"errors {sum(result[p]['errors'] for p in ('create', 'read', 'delete'))}"
        )
        shutil.rmtree(db_dir, ignore_errors=True)

    def sqlite_ceiling(self, round_: int) -> None:
        db_dir = self.workdir / f"sqlite-r{round_}"
        cmd = [sys.executable, str(BENCH / "store_load.py"), "sqlite", "--db-dir", str(db_dir)]
        cmd += ["--seconds", str(self.args.store_seconds)]
        out = subprocess.run(pinned(cmd, self.args.server_cpu), capture_output=True, text=True, check=True)
        result = json.loads(out.stdout)
        self.record("ceiling", "sqlite", round_, **result)
        log(
            f"  sqlite WAL commits/s: NORMAL {result['commits_per_s_normal']:,.0f}  "
            f"FULL {result['commits_per_s_full']:,.0f}"
        )
        shutil.rmtree(db_dir, ignore_errors=True)

    # one round ----------------------------------------------------------------------------------------------
    def round(self, r: int) -> None:
        a = self.args
        want = set(a.only)
        names = rotate(list(a.servers), r)
        http_work = want & {"login", "flow", "footprint"}
        live: dict[str, Server] = {}
        cookies: dict[str, str] = {}
        if http_work:
            log(f"round {r + 1}: starting {', '.join(names)}")
            for name in names:
                server = self.start(name, r)
                live[name] = server
                time.sleep(a.settle)
                mem = memory_mb(server.pid)
                self.record("footprint", name, r, phase="idle", ready_after_s=server.ready_after, **mem)
                log(
                    f"  {name:<14} first 200 after {server.ready_after:.3f} s, "
                    f"idle RSS {mem['rss_mb']:.1f} MB"
                )
        if "login" in want:
            ceilings = []
            if "ceiling" in want:
                ceilings = ["tornado_hello", "tornado_302_hmac"]
                for name in ceilings:
                    live[name] = self.start(name, r)
            for name in names:
                cookies[name] = servers.session_cookie(live[name], f"login-r{r}")
            for c in a.concurrency:
                for name in rotate(names + ceilings, r):
                    self.login(name, live[name], cookies.get(name), c, r)
            for name in ceilings:
                self.stop(live.pop(name))
        if "flow" in want:
            assert self.fake is not None
            for latency_ms in a.latencies:
                servers.set_latency(self.fake, latency_ms / 1000)
                for c in a.flow_concurrency:
                    for name in names:
                        self.flow(name, live[name], latency_ms, c, r)
            servers.set_latency(self.fake, 0)
        if http_work and "flow" in want:
            for name in names:
                mem = memory_mb(live[name].pid)
                self.record("footprint", name, r, phase="after_flows", **mem)
                log(f"  {name:<14} RSS after the flow workload {mem['rss_mb']:.1f} MB")
        for server in live.values():
            self.stop(server)
        if "store" in want:
            linkds = [n for n in a.servers if n.startswith("linkd")]
            peers = ["peer_tutorial"] if any(n.startswith("peer") for n in a.servers) else []
            store_servers = rotate([*linkds, *peers], r)
            for procs in a.store_procs:
                for name in store_servers:
                    self.store(name, procs, 1, r)
            for c in a.store_concurrency:
                if c > 1:
                    for name in linkds:
                        self.store(name, 1, c, r)
        if "ceiling" in want:
            self.sqlite_ceiling(r)

    def run(self) -> dict[str, Any]:
        a = self.args
        started = datetime.datetime.now(datetime.UTC)
        if any(n.startswith("peer") for n in a.servers):
            a.peer_venv = servers.ensure_peer_venv(a.peer_venv, a.peer_dir)
        self.fake, self.fake_settings = servers.start_fake(self.workdir, a.load_cpu)
        try:
            for r in range(a.rounds):
                self.round(r)
        finally:
            self.stop_all()
        finished = datetime.datetime.now(datetime.UTC)
        return self.results(started, finished)

    # output ---------------------------------------------------------------------------------------
    def results(self, started: datetime.datetime, finished: datetime.datetime) -> dict[str, Any]:
        meta = machine(self.args, started, finished)
        return summarize(self.samples, meta, self.raw)


def summarize(samples: Samples, meta: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Targets and tables from the samples; the grid (concurrencies, latencies) is read off the runs."""
    logins = [e["connections"] for e in runs if e["kind"] == "login"] or [64]
    flows = [e for e in runs if e["kind"] == "flow"]
    c_flow = max((e["concurrency"] for e in flows), default=64)
    lat = max((e["latency_ms"] for e in flows), default=100)
    servers = list(dict.fromkeys(e["server"] for e in runs))
    t = report.targets(
        samples,
        ceiling_key=f"ceiling.302.c{max(logins)}",
        login_key=f"login.rps.c{max(logins)}",
        flow_key=f"flow.lat{lat}.c{c_flow}.rate",
        cpu_key=f"flow.lat{lat}.c{c_flow}.cpu",
    )
    return {
        "meta": meta,
        "metrics": samples.to_json(),
        "targets": [{"target": x.text, "measured": x.measured, "met": x.ok} for x in t],
        "runs": runs,
        "_tables": tables(samples, servers, t),
    }


def tables(samples: Samples, servers: list[str], t: list[report.Target]) -> str:
    pairs = [(m.key, "tornado_hello", "") for m in CEIL_HELLO.values()]
    pairs += [(m.key, "tornado_302_hmac", f"login.rps.c{c}") for c, m in CEIL_302.items()]
    pairs += [(m.key, "tornado_302_hmac", f"login.cpu.c{c}") for c, m in CEIL_302_CPU.items()]
    pairs += [(CEIL_SQLITE["normal"].key, "sqlite", "store.create.p1")]
    pairs += [(CEIL_SQLITE["full"].key, "sqlite", "")]
    return "\n\n".join(
        [
            report.main_table(samples, servers),
            "Ceilings (the same machine, the same run):\n\n" + report.ceiling_table(samples, pairs),
            "Targets (issue #8; each against the stronger peer variant where it applies):\n\n"
            + report.targets_table(t),
        ]
    )


def render(path: Path) -> dict[str, Any]:
    """The tables of a saved run (`--render FILE.json`), rebuilt from its raw records."""
    saved = json.loads(path.read_text())
    samples = Samples()
    for entry in saved["runs"]:
        ingest(samples, entry)
    return summarize(samples, saved["meta"], saved["runs"])


def machine(a: argparse.Namespace, started: datetime.datetime, finished: datetime.datetime) -> dict[str, Any]:
    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    cpu_model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    peer_python = str(a.peer_venv / "bin" / "python")
    peer_versions = version(
        [
            peer_python,
            "-c",
            "import importlib.metadata as m; print(' '.join(f'{p} {m.version(p)}' for p in "
            "('fastapi','uvicorn','starlette','httpx','cryptography')))",
        ]
    )
    import aiohttp
    import tornado

    return {
        "command": " ".join(shlex.quote(x) for x in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "cpu": cpu_model,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tornado": tornado.version,
        "aiohttp": aiohttp.__version__,
        "wrk": version(["wrk", "--version"]),
        "peer": peer_versions,
        "server_cpu": a.server_cpu,
        "load_cpu": a.load_cpu,
        "rounds": a.rounds,
        "login_seconds": a.login_seconds,
        "flow_seconds": a.flow_seconds,
        "store_seconds": a.store_seconds,
        "linkd_log_level": a.linkd_log_level,
    }


def markdown(results: dict[str, Any]) -> str:
    m = results["meta"]
    return (
        f"Measured {m['started']} → {m['finished']} (UTC) on {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gb']} GB, Linux {m['kernel']}, Python {m['python']}, Tornado {m['tornado']}, "
        f"aiohttp {m['aiohttp']}, {m['wrk']}; peer: {m['peer']}. Servers pinned to CPU {m['server_cpu']}, "
        f"wrk, the flow client and the fake platform to CPU {m['load_cpu']}; {m['rounds']} round(s), "
        f"medians with (min–max) over rounds.\n\n"
        f"Command: `{m['command']}`\n\n" + str(results["_tables"]) + "\n"
    )


def update_readme(text: str) -> None:
    readme = README.read_text()
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"{README} has no {BEGIN} … {END} block to replace")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")


# -- command line ----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="1 round, short windows: a smoke test (< 2 min)")
    parser.add_argument("--rounds", type=int, help="rounds of alternation (default 3; --quick: 1)")
    parser.add_argument("--only", help=f"comma-separated workloads among {','.join(WORKLOADS)} (default all)")
    parser.add_argument("--servers", default="linkd,peer_tutorial,peer_shared", help="servers compared")
    parser.add_argument("--concurrency", help="login (and flow) concurrencies (default 1,16,64)")
    parser.add_argument("--flow-concurrency", help="flow concurrencies (default: as --concurrency)")
    parser.add_argument("--latencies", help="fake-provider latencies in ms for flows (default 0,100)")
    parser.add_argument(
        "--peer-dir",
        type=Path,
        default=here.parent.parent / "shared" / "peers" / "seed_fastapi",
        help="the peer app (default ../shared/peers/seed_fastapi beside the checkout)",
    )
    parser.add_argument(
        "--peer-venv",
        type=Path,
        default=servers.default_peer_venv(),
        help="the peer's venv, outside the repo (created when missing)",
    )
    parser.add_argument("--server-cpu", default="0", help="core(s) for the servers under test (taskset -c)")
    parser.add_argument("--load-cpu", default="1", help="core(s) for wrk, the flow client and the fake")
    parser.add_argument("--login-seconds", type=int, help="each wrk run, after 1 s of warm-up (default 5)")
    parser.add_argument(
        "--flow-seconds", type=float, help="each flow window, at least 2 flow times (default 6, up to 20)"
    )
    parser.add_argument("--store-seconds", type=float, help="each store phase (default 2)")
    parser.add_argument("--linkd-log-level", default="INFO", help="LINKD_LOG_LEVEL of the measured linkd")
    parser.add_argument(
        "--compare-src",
        type=Path,
        help="also measure linkd from this checkout (server linkd_b): a patched copy, before/after",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy linkd's worker at login and flow at the highest concurrency (first round)",
    )
    parser.add_argument(
        "--compare-env",
        help="settings for linkd_b, e.g. LINKD_LOG_LEVEL=WARNING (with no --compare-src: this checkout)",
    )
    parser.add_argument("--out", type=Path, help="the JSON file (default bench/results/bench-<time>.json)")
    parser.add_argument("--render", type=Path, help="print the tables of a saved results JSON, run nothing")
    parser.add_argument("--update-readme", action="store_true", help="put the tables into bench/README.md")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, databases)")
    a = parser.parse_args(argv)
    quick = a.quick
    a.rounds = a.rounds or (1 if quick else 3)
    a.only = set((a.only or ",".join(WORKLOADS)).split(","))
    if a.only - set(WORKLOADS):
        parser.error(f"unknown workload(s): {', '.join(sorted(a.only - set(WORKLOADS)))}")
    a.servers = [s for s in a.servers.split(",") if s]
    a.compare_env = dict(kv.split("=", 1) for kv in (a.compare_env or "").split(",") if kv)
    if a.compare_env and not a.compare_src:
        a.compare_src = here.parent  # the same checkout, other settings
    if a.compare_src:
        a.compare_src = a.compare_src.resolve()
        if "linkd_b" not in a.servers:
            a.servers.insert(1, "linkd_b")
    a.concurrency = [int(x) for x in (a.concurrency or ("1,64" if quick else "1,16,64")).split(",")]
    flow_default = "16" if quick else ",".join(map(str, a.concurrency))
    a.flow_concurrency = [int(x) for x in (a.flow_concurrency or flow_default).split(",")]
    a.latencies = [int(x) for x in (a.latencies or "0,100").split(",")]
    a.login_seconds = a.login_seconds or (2 if quick else 5)
    a.login_warmup = 1
    a.flow_seconds = a.flow_seconds or (2.0 if quick else 6.0)
    a.flow_warmup = 0.5 if quick else 2.0
    a.flow_max_warmup = 6.0 if quick else 30.0
    a.flow_max_duration = a.flow_seconds if quick else 20.0
    a.store_seconds = a.store_seconds or (0.5 if quick else 2.0)
    a.store_procs = [1, 4]
    a.profile_cells = {
        f"login-c{max(a.concurrency)}",
        f"flow-{max(a.latencies)}ms-c{max(a.flow_concurrency)}",
        f"flow-{min(a.latencies)}ms-c{max(a.flow_concurrency)}",
    }
    if a.profile and profiling.py_spy() is None:
        parser.error("--profile needs py-spy (pip install py-spy)")
    a.store_concurrency = [1] if quick else [1, 16]
    a.settle = 0.5 if quick else 1.0
    a.peer_dir = a.peer_dir.resolve()
    if not (a.peer_dir / "run_peer.sh").exists():
        parser.error(f"no peer app at {a.peer_dir} (use --peer-dir)")
    if not wrk.available() and "login" in a.only:
        parser.error("wrk is not installed (Debian: apt-get install wrk)")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        text = markdown(render(args.render))
        print(text)
        if args.update_readme:
            update_readme(text)
            log(f"updated {README}")
        return 0
    bench = Bench(args)
    log(f"benchmark working directory: {bench.workdir}")
    try:
        results = bench.run()
    finally:
        if not args.keep:
            shutil.rmtree(bench.workdir, ignore_errors=True)
    text = markdown(results)
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS / f"bench-{stamp}.json"
    out.write_text(json.dumps({k: v for k, v in results.items() if k != "_tables"}, indent=1))
    (RESULTS / "latest.md").write_text(text)
    log(f"wrote {out} and {RESULTS / 'latest.md'}")
    for raw in sorted(bench.profiled.values()):
        if raw.exists():
            summary = profiling.summarize(raw)
            raw.with_suffix(".summary.txt").write_text(summary + "\n")
            print("\n" + summary)
    if args.update_readme:
        update_readme(text)
        log(f"updated {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
