"""Fixtures of the system suite: the platforms' fakes on loopback and real `linkd serve` processes.

`fakes()` serves the example plugin's, Shopify's and Facebook's sandboxes from one
server in the test process (handlers can be swapped for hostile ones); `linkd()`
starts `python -m linkd serve` with two workers, its settings and secrets only in an
env file, its stderr in a log file the test reads. Everything else is observed the
way an operator or an attacker would: HTTP, the database files, /proc.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tornado.web
from linkd_example import ExampleProvider, FakeOAuth

from providers.facebook import FacebookProvider
from providers.oauth2_sandbox import AuthorizeHandler
from providers.shopify import ShopifyProvider

from ..browser import Browser, Response
from ..flows import to_callback
from ..processes import NotifySocket, alive, children_of, clean_env, rss_kb, wait_healthy
from ..servers import ServerThread, free_port

HERE = Path(__file__).resolve().parent
START_TIMEOUT = 30.0
PREFIXES = {"example": "/ex", "shopify": "/shopify", "facebook": "/facebook"}


# -- the slow tests run only when asked for ------------------------------------------------------
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`slow` tests (the 60-second load run) are skipped unless `-m slow` selects them."""
    expression = config.getoption("markexpr") or ""
    if re.search(r"(?<!not )\bslow\b", expression):
        return
    skip = pytest.mark.skip(reason="slow: run with `pytest -m slow tests/system` (tox -e load)")
    for item in items:
        if "slow" in item.keywords and HERE in Path(str(item.fspath)).parents:
            item.add_marker(skip)


# -- the platforms' fakes ---------------------------------------------------------------------------
class UniqueSubjectAuthorize(AuthorizeHandler):
    """The example fake's consent step, approving each login as a new person (user-1, user-2, …)."""

    counter = itertools.count(1)

    def get(self, hint: str | None = None) -> None:
        self.fake.next_subject = f"user-{next(self.counter)}-{secrets.token_hex(3)}"
        super().get(hint)


@dataclass
class Fakes:
    """Three platforms on one loopback server: `example` (FakeOAuth), `shopify`, `facebook` states."""

    url: str
    example: FakeOAuth
    shopify: Any
    facebook: Any
    settings: dict[str, str]
    server: ServerThread

    def secrets(self) -> list[str]:
        """Every client secret, code and token the three fakes know: none may ever leak."""
        example = [self.example.client_secret, *self.example.minted]
        return sorted({*example, *self.shopify.issued_secrets(), *self.facebook.secrets()})

    def verifiers(self) -> list[str]:
        """The PKCE verifiers the fakes received at their token endpoints."""
        example = [r["code_verifier"] for r in self.example.token_requests if r.get("code_verifier")]
        return sorted({*example, *self.facebook.verifiers()})

    def subject_of(self, access_token: str) -> str | None:
        grant = self.example.access.get(access_token)
        return grant.subject if grant is not None else None


Swap = Mapping[type, tuple[type, dict[str, Any]]]


def serve_fakes(swap: Swap | None = None, *, unique_subjects: bool = False) -> Fakes:
    """Serve the three sandboxes under /ex, /shopify and /facebook of one free port.

    `swap` replaces a sandbox handler class by another (with extra initialize() kwargs):
    that is how a test makes an endpoint hang, trickle or redirect.
    """
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    swap = dict(swap or {})
    if unique_subjects:
        swap.setdefault(AuthorizeHandler, (UniqueSubjectAuthorize, {}))
    sandboxes = {
        "example": ExampleProvider.sandbox(base + PREFIXES["example"]),
        "shopify": ShopifyProvider.sandbox(base + PREFIXES["shopify"]),
        "facebook": FacebookProvider.sandbox(base + PREFIXES["facebook"]),
    }
    handlers: list[Any] = []
    settings: dict[str, str] = {}
    for name, sandbox in sandboxes.items():
        assert sandbox is not None
        for pattern, handler, kwargs in sandbox.handlers:
            replacement, extra = swap.get(handler, (handler, {}))
            handlers.append((PREFIXES[name] + pattern, replacement, {**kwargs, **extra}))
        settings.update(sandbox.settings)
    sandboxes["shopify"].state.auto_approve = True
    sandboxes["facebook"].state.auto_approve = True
    server = ServerThread(lambda: tornado.web.Application(handlers), port=port).start()
    return Fakes(
        base,
        sandboxes["example"].state,
        sandboxes["shopify"].state,
        sandboxes["facebook"].state,
        settings,
        server,
    )


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    served = serve_fakes()
    yield served
    served.server.stop()


# -- a running linkd ---------------------------------------------------------------------------------
@dataclass
class Linkd:
    """One `linkd serve` (a supervisor and its workers) in its own process group."""

    data_dir: Path
    env_file: Path
    log_path: Path
    values: dict[str, str]
    port: int
    workers: int
    proc: subprocess.Popen[bytes] | None = None
    history: list[int] = field(default_factory=list)  # every supervisor pid, in order
    notify: NotifySocket = field(default_factory=NotifySocket)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def secret(self) -> str:
        return self.values["STATE_TOKEN_SECRET"]

    @property
    def api_token(self) -> str:
        return self.values["LINKD_API_TOKEN"]

    def start(self) -> Linkd:
        env = clean_env()
        env["NOTIFY_SOCKET"] = self.notify.address
        mark = self.notify.mark()
        argv = [sys.executable, "-m", "linkd", "serve", "--env-file", str(self.env_file)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*argv, "--port", str(self.port)],
                env=env,
                cwd=self.data_dir.parent,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.history.append(self.proc.pid)
        wait_healthy(self.url, self.proc, START_TIMEOUT)
        self.wait_workers(mark)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def worker_pids(self) -> set[int]:
        return children_of(self.pid) if self.proc is not None and self.proc.poll() is None else set()

    def mark(self) -> int:
        """Call before killing a worker; `wait_workers(mark)` then waits for its replacement."""
        return self.notify.mark()

    def wait_workers(self, since: int, timeout: float = START_TIMEOUT) -> set[int]:
        """Until the supervisor says, after `since`, that all `workers` workers serve."""
        assert self.proc is not None
        self.notify.wait_for(f"with {self.workers} worker(s)", since, timeout)
        pids = self.worker_pids()
        assert len(pids) == self.workers and self.proc.poll() is None, (pids, self.log()[-3000:])
        return pids

    def pids(self) -> list[int]:
        """The supervisor and its workers."""
        return [self.pid, *sorted(self.worker_pids())]

    def rss_kb(self) -> dict[int, int]:
        return {pid: rss_kb(pid) for pid in sorted(self.worker_pids())}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (a graceful drain), SIGKILL of the group if that does not end it."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_group()
        return self.proc.returncode

    def kill_group(self) -> None:
        """kill -9 of the whole process group: supervisor and workers at once."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in children_of(self.proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.01)  # polling /proc with a deadline

    # the files ---------------------------------------------------------------------------------
    def db_paths(self) -> list[Path]:
        return sorted({Path(self.values["SESSION_DB_PATH"]), Path(self.values["TOKEN_DB_PATH"])})

    def db_files(self) -> list[Path]:
        """Every database file on disk, `-wal` and `-shm` included."""
        return sorted(p for p in self.data_dir.iterdir() if re.search(r"\.db(-wal|-shm|-journal)?$", p.name))

    def sql(self, query: str, params: tuple[Any, ...] = (), db: str = "tokens") -> list[tuple[Any, ...]]:
        """Read a database file directly, as an operator would (the daemon may be running)."""
        path = self.values["TOKEN_DB_PATH" if db == "tokens" else "SESSION_DB_PATH"]
        conn = sqlite3.connect(path, timeout=10)
        try:
            return conn.execute(query, params).fetchall()
        finally:
            conn.close()

    def count(self, table: str) -> int:
        db = "sessions" if table in ("sessions", "states") else "tokens"
        return int(self.sql(f"SELECT count(*) FROM {table}", db=db)[0][0])

    def snapshot(self) -> dict[str, list[str]]:
        """Every row of every table of both databases, as sorted reprs (small test databases)."""
        tables = {
            "sessions": ("sessions", "states"),
            "tokens": ("users", "connections", "webhook_events", "deletions", "audit"),
        }
        return {
            table: sorted(repr(row) for row in self.sql(f"SELECT * FROM {table}", db=db))
            for db, names in tables.items()
            for table in names
        }

    def api(self, path: str, method: str = "GET") -> Response:
        browser = Browser("application/json")
        return browser.request(method, self.url + path, headers={"Authorization": f"Bearer {self.api_token}"})


def linkd_values(data_dir: Path, fakes: Fakes | None, port: int, **settings: str) -> dict[str, str]:
    values = {
        "STATE_TOKEN_SECRET": secrets.token_urlsafe(48),
        "LINKD_API_TOKEN": secrets.token_urlsafe(40),
        "SESSION_DB_PATH": str(data_dir / "sessions.db"),
        "TOKEN_DB_PATH": str(data_dir / "tokens.db"),
        "LINKD_HOST": "127.0.0.1",
        "LINKD_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "LINKD_PROVIDERS": "example,shopify,facebook",
        "LINKD_PROVIDERS_DIR": str(data_dir.parent / "providers.d"),
        "LINKD_WORKERS": "2",
        "LINKD_LOG_LEVEL": "INFO",
        **(fakes.settings if fakes else {}),
    }
    values.update(settings)
    return values


class Launcher:
    """Starts `linkd serve` processes under `base` (one folder each) and kills them all at the end."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.started: list[Linkd] = []

    def __call__(self, fakes: Fakes | None, *, name: str = "", **settings: str) -> Linkd:
        name = name or f"linkd{len(self.started)}"
        data_dir = self.base / name / "data"
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        port = free_port()
        values = linkd_values(data_dir, fakes, port, **settings)
        env_file = data_dir.parent / "linkd.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        env_file.chmod(0o600)
        log = data_dir.parent / "linkd.log"
        daemon = Linkd(data_dir, env_file, log, values, port, int(values["LINKD_WORKERS"]))
        self.started.append(daemon)
        return daemon.start()

    def close(self) -> None:
        for daemon in self.started:
            daemon.kill_group()
            daemon.notify.close()


@pytest.fixture
def linkd(tmp_path: Path) -> Iterator[Launcher]:
    """`linkd(fakes, **settings)` starts a `linkd serve`; every one is killed at teardown."""
    launcher = Launcher(tmp_path)
    yield launcher
    launcher.close()


# -- flows -------------------------------------------------------------------------------------------
def connect(browser: Browser, url: str, login_path: str) -> Response:
    """login → the fake's consent (auto-approved) → callback; the callback's response."""
    return browser.get(to_callback(browser, url + login_path))


def sqlite_integrity(path: Path) -> str:
    conn = sqlite3.connect(str(path), timeout=10)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()
