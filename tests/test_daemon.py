"""`linkd serve` as systemd runs it: real processes, real signals, a real notify socket.

No systemd is needed: the test binds the datagram socket systemd would, sets
`NOTIFY_SOCKET` (and `WATCHDOG_USEC`, `LISTEN_FDS`) the way systemd does, and
synchronises on what arrives there or on the port, never on a bare sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import itertools
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tornado.web
from linkd_example import ExampleProvider, FakeOAuth, TokenHandler

from linkd.logs import redact, register_secret
from linkd.systemd import Notifier, listen_sockets, watchdog_interval

from .browser import Browser, Response
from .processes import NotifySocket, alive, children_of, clean_env
from .servers import ServerThread, free_port

START_TIMEOUT = 20.0


# -- the fake platform ------------------------------------------------------------------------------


class SlowTokenHandler(TokenHandler):  # type: ignore[misc]
    """The sandbox's token endpoint, held until the test releases it: a realistic in-flight request."""

    def initialize(self, fake: FakeOAuth, entered: threading.Event, release: threading.Event) -> None:
        super().initialize(fake)
        self.entered = entered
        self.release = release

    async def post(self) -> None:
        self.entered.set()
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)
        super().post()


@dataclass
class Fake:
    url: str
    state: FakeOAuth
    settings: dict[str, str]
    entered: threading.Event
    release: threading.Event


@pytest.fixture
def fake() -> Iterator[Fake]:
    """The example plugin's sandbox mounted under /ex of its own server, token endpoint holdable."""
    port = free_port()
    base = f"http://127.0.0.1:{port}/ex"
    sandbox = ExampleProvider.sandbox(base)
    entered, release = threading.Event(), threading.Event()
    release.set()
    handlers: list[Any] = []
    for pattern, handler, kwargs in sandbox.handlers:
        if handler is TokenHandler:
            handler, kwargs = SlowTokenHandler, {**kwargs, "entered": entered, "release": release}
        handlers.append(("/ex" + pattern, handler, kwargs))
    server = ServerThread(lambda: tornado.web.Application(handlers), port=port).start()
    yield Fake(base, sandbox.state, dict(sandbox.settings), entered, release)
    release.set()
    server.stop()


# -- the notify socket ------------------------------------------------------------------------------


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket(timeout=START_TIMEOUT)
    yield sock
    sock.close()


# -- the daemon -------------------------------------------------------------------------------------


class Daemon:
    """One `linkd serve` process; stdout and stderr go to a file the test reads afterwards."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path, **popen: Any) -> None:
        self.log_path = log
        self.port = int(env.get("_PORT", "0"))
        env = {k: v for k, v in env.items() if k != "_PORT"}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, **popen
            )
        self.pid = self.proc.pid
        self.url = f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self, timeout: float = 20.0) -> tuple[int, float]:
        """SIGTERM, then the exit status and how long the exit took."""
        started = time.monotonic()
        self.signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - started

    def children(self) -> set[int]:
        return children_of(self.pid)

    def kill_all(self) -> None:
        if self.proc.poll() is None:
            for pid in self.children():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def start(tmp_path: Path, fake: Fake) -> Iterator[Callable[..., Daemon]]:
    """Start `linkd serve` with the example provider against the fake; settings only in an env file."""
    daemons: list[Daemon] = []
    secret = secrets.token_urlsafe(48)

    def run(
        *,
        env: dict[str, str] | None = None,
        wrapper: list[str] | None = None,
        pass_fds: tuple[int, ...] = (),
        port: int | None = None,
        **settings: str,
    ) -> Daemon:
        port = port or free_port()
        n = len(daemons)
        values = {
            "STATE_TOKEN_SECRET": secret,
            "LINKD_PROVIDERS": "example",
            **fake.settings,
            "SESSION_DB_PATH": str(tmp_path / "data" / "sessions.db"),
            "TOKEN_DB_PATH": str(tmp_path / "data" / "tokens.db"),
            "LINKD_HOST": "127.0.0.1",
            "LINKD_PORT": str(port),
            "LINKD_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "LINKD_PROVIDERS_DIR": str(tmp_path / "providers.d"),
            **settings,
        }
        env_file = tmp_path / f"linkd-{n}.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        env_file.chmod(0o600)
        process_env = clean_env()
        process_env.update(env or {})
        process_env["_PORT"] = str(port)
        argv = [*(wrapper or []), sys.executable, "-m", "linkd", "serve", "--env-file", str(env_file)]
        daemon = Daemon(argv, process_env, tmp_path, tmp_path / f"linkd-{n}.log", pass_fds=pass_fds)
        daemon.secret = secret  # type: ignore[attr-defined]
        daemon.env_file = env_file  # type: ignore[attr-defined]
        daemons.append(daemon)
        return daemon

    yield run
    for daemon in daemons:
        daemon.kill_all()


def get(url: str) -> Response:
    return Browser("application/json").get(url)


def accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def connect_flow(browser: Browser, url: str) -> Response:
    """login → the fake's consent → callback, as a browser would; the final response."""
    return browser.follow(f"{url}/example/login")


# -- sd_notify, watchdog, signals ------------------------------------------------------------------


def test_ready_only_once_serving_then_status_watchdog_and_stopping(
    start: Callable[..., Daemon], notify: NotifySocket
) -> None:
    daemon = start(env={"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "400000"})
    bound: list[float] = []

    def first_accept() -> None:  # when does the port start accepting? polled with a deadline
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and not accepts(daemon.port):
            time.sleep(0.005)
        bound.append(time.monotonic())

    poller = threading.Thread(target=first_accept)
    poller.start()
    started = time.monotonic()
    first_status, _ = notify.wait("STATUS", "starting")
    ready_at, _ = notify.wait("READY", "1")
    assert get(f"{daemon.url}/healthz").status == 200  # served, databases open: at the moment of READY
    poller.join()
    _, serving = notify.wait("STATUS", "serving on 127.0.0.1:")
    assert f":{daemon.port} with 1 worker(s)" in serving
    assert first_status < ready_at and bound and bound[0] <= ready_at + 0.05
    print(f"start-to-READY: {1000 * (ready_at - started):.0f} ms")

    # WATCHDOG=1 every WATCHDOG_USEC/2 = 200 ms while the worker's loop beats
    notify.collect(1.3)
    pings = notify.times("WATCHDOG", ready_at)
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert len(pings) >= 4, pings
    assert 0.15 <= statistics.median(gaps) <= 0.3, gaps

    # a frozen worker loop stops the pings (systemd would then restart linkd); thawed, they resume
    (worker,) = daemon.children()
    os.kill(worker, signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        notify.collect(1.6)
        assert notify.times("WATCHDOG", frozen + 0.8, frozen + 1.6) == []
    finally:
        os.kill(worker, signal.SIGCONT)
    thawed = time.monotonic()
    notify.collect(0.8)
    assert notify.times("WATCHDOG", thawed)

    code, _ = daemon.stop()
    notify.wait("STOPPING", "1")
    assert code == 0
    assert not alive(worker)
    assert "stopped answering; withholding the watchdog ping" in daemon.log()


def test_abstract_notify_socket_and_sighup(start: Callable[..., Daemon]) -> None:
    notify = NotifySocket(f"@linkd-test-{secrets.token_hex(8)}")
    try:
        daemon = start(env={"NOTIFY_SOCKET": notify.address})
        notify.wait("READY", "1")
        daemon.signal(signal.SIGHUP)  # not a stop: re-read or ignored, documented in docs/systemd.md
        assert get(f"{daemon.url}/healthz").status == 200
        code, _ = daemon.stop()
        notify.wait("STOPPING", "1")
        assert code == 0
        assert "SIGHUP" in daemon.log()
        assert not notify.times("WATCHDOG", 0)  # no WATCHDOG_USEC, no pings
    finally:
        notify.close()


RELOADING = (
    "import sys; from linkd.config import load_settings; from linkd.daemon import serve; "
    "path = sys.argv[sys.argv.index('--env-file') + 1]; "
    "sys.exit(serve(load_settings(path), reload=lambda: load_settings(path)))"
)


def test_sighup_applies_a_new_log_level_everywhere_when_serve_can_reread_settings(
    start: Callable[..., Daemon], notify: NotifySocket
) -> None:
    daemon = start(
        env={"NOTIFY_SOCKET": notify.address}, wrapper=[sys.executable, "-c", RELOADING], LINKD_WORKERS="2"
    )
    notify.wait("READY", "1")
    env_file: Path = daemon.env_file  # type: ignore[attr-defined]
    env_file.write_text(env_file.read_text() + "LINKD_LOG_LEVEL=WARNING\n")
    daemon.signal(signal.SIGHUP)
    pids = {str(daemon.pid), *map(str, daemon.children())}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        reloaded = {
            line.rsplit("pid=", 1)[1]
            for line in daemon.log().splitlines()
            if "log level is now WARNING" in line
        }
        if reloaded == pids:
            break
        time.sleep(0.02)  # polling the log file with a deadline
    assert reloaded == pids, daemon.log()
    assert get(f"{daemon.url}/healthz").status == 200
    assert daemon.stop()[0] == 0
    assert "GET /healthz 200" not in daemon.log()  # INFO is now below the level


def test_no_notify_socket_is_a_no_op(start: Callable[..., Daemon]) -> None:
    daemon = start()
    wait_accepting(daemon)
    assert get(f"{daemon.url}/healthz").status == 200
    assert daemon.stop()[0] == 0


def wait_accepting(daemon: Daemon) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert daemon.proc.poll() is None, daemon.log()
        try:
            if get(f"{daemon.url}/healthz").status == 200:
                return
        except OSError:
            pass
        time.sleep(0.02)  # polling the port with a deadline
    raise AssertionError("linkd never served")


# -- graceful drain -------------------------------------------------------------------------------


def in_background(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def released_answer(fake: Fake, thread: threading.Thread, result: list[Any]) -> Response:
    """Let the held token call finish; the in-flight request's answer, which must be a 200."""
    fake.release.set()
    thread.join(10)
    (response,) = result
    assert isinstance(response, Response), response
    assert response.status == 200, response.text
    return response


def test_sigterm_lets_an_in_flight_connect_finish(
    start: Callable[..., Daemon], notify: NotifySocket, fake: Fake
) -> None:
    daemon = start(env={"NOTIFY_SOCKET": notify.address}, LINKD_SHUTDOWN_TIMEOUT="5")
    notify.wait("READY", "1")
    idle = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)  # a keep-alive client
    idle.request("GET", "/healthz")
    assert idle.getresponse().read() and True
    fake.release.clear()
    thread, result = in_background(lambda: connect_flow(Browser("application/json"), daemon.url))
    assert fake.entered.wait(10), "the callback never reached the token endpoint"

    terminated = time.monotonic()
    daemon.signal(signal.SIGTERM)
    notify.wait("STOPPING", "1")
    deadline = time.monotonic() + 5  # stop accepting: new connections are refused while one drains
    while accepts(daemon.port) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not accepts(daemon.port)
    # a new request on a connection opened before is still served, and told the connection closes;
    # /healthz says the worker is stopping, so a load balancer routes elsewhere
    idle.request("GET", "/healthz")
    late = idle.getresponse()
    assert late.status == 503 and late.getheader("Connection") == "close"
    assert json.loads(late.read()) == {"status": "stopping"}
    idle.close()
    assert daemon.proc.poll() is None  # still waiting for the request in flight

    response = released_answer(fake, thread, result)
    assert response.json()["provider"] == "example"
    assert daemon.proc.wait(10) == 0
    assert time.monotonic() - terminated < 5
    log = daemon.log()
    assert "1 request(s) finished, 0 cut at the deadline" in log
    assert "databases closed" in log


def test_drain_deadline_cuts_what_outlives_it(
    start: Callable[..., Daemon], notify: NotifySocket, fake: Fake
) -> None:
    daemon = start(env={"NOTIFY_SOCKET": notify.address}, LINKD_SHUTDOWN_TIMEOUT="1")
    notify.wait("READY", "1")
    fake.release.clear()
    thread, result = in_background(lambda: connect_flow(Browser("application/json"), daemon.url))
    assert fake.entered.wait(10)
    code, took = daemon.stop()
    thread.join(10)
    fake.release.set()
    assert code == 0
    assert 1.0 <= took < 4.0, took  # the deadline, not the supervisor's SIGKILL grace
    assert isinstance(result[0], OSError)  # the client saw the connection go, no half answer
    assert "0 request(s) finished, 1 cut at the deadline" in daemon.log()


# -- workers -------------------------------------------------------------------------------------


def served_by(daemon: Daemon, path: str) -> set[str]:
    return {
        line.rsplit("pid=", 1)[1]
        for line in daemon.log().splitlines()
        if "logger=linkd.access" in line and f"GET {path} " in line
    }


def test_workers_share_the_socket_are_replaced_and_stop_together(
    start: Callable[..., Daemon], notify: NotifySocket
) -> None:
    daemon = start(env={"NOTIFY_SOCKET": notify.address}, LINKD_WORKERS="2")
    notify.wait("READY", "1")
    workers = daemon.children()
    assert len(workers) == 2

    # each worker serves the shared socket on its own: freeze one, the other answers, and back
    for frozen in sorted(workers):
        (other,) = workers - {frozen}
        os.kill(frozen, signal.SIGSTOP)
        try:
            for _ in range(3):
                assert get(f"{daemon.url}/probe-{frozen}").status == 404
        finally:
            os.kill(frozen, signal.SIGCONT)
        assert served_by(daemon, f"/probe-{frozen}") == {str(other)}

    # a killed worker is replaced, and the port keeps serving meanwhile
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    for _ in range(5):
        assert get(f"{daemon.url}/healthz").status == 200
    notify.wait("STATUS", "replacing worker")
    notify.wait("STATUS", "serving on")
    replaced = daemon.children()
    assert len(replaced) == 2 and victim not in replaced and workers - {victim} <= replaced
    assert get(f"{daemon.url}/healthz").status == 200
    assert [key for _, key, _ in notify.lines].count("READY") == 1  # sent once, not per replacement

    code, _ = daemon.stop()
    assert code == 0
    assert not any(alive(pid) for pid in workers | replaced), "a worker outlived the supervisor"


def test_workers_do_not_outlive_a_killed_supervisor(
    start: Callable[..., Daemon], notify: NotifySocket
) -> None:
    daemon = start(env={"NOTIFY_SOCKET": notify.address}, LINKD_WORKERS="2")
    notify.wait("READY", "1")
    workers = daemon.children()
    assert len(workers) == 2
    daemon.signal(signal.SIGKILL)  # no chance to stop them: the kernel tells them (PR_SET_PDEATHSIG)
    daemon.proc.wait(10)
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.02)  # polling /proc with a deadline
    assert not any(alive(pid) for pid in workers), "orphaned workers"


# -- socket activation -----------------------------------------------------------------------------

ACTIVATE = (
    "import os, sys; fd = int(sys.argv[1]); fd != 3 and (os.dup2(fd, 3), os.close(fd)); "
    "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); os.execv(sys.argv[2], sys.argv[2:])"
)


def test_socket_activation_serves_the_inherited_socket(
    start: Callable[..., Daemon], notify: NotifySocket
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    activated = listener.getsockname()[1]
    configured = free_port()
    wrapper = [sys.executable, "-c", ACTIVATE, str(listener.fileno())]
    daemon = start(
        env={"NOTIFY_SOCKET": notify.address}, wrapper=wrapper, pass_fds=(listener.fileno(),), port=configured
    )
    listener.close()  # linkd holds the only copy now, as after systemd handed it over
    notify.wait("READY", "1")
    _, serving = notify.wait("STATUS", "serving on")
    assert f"127.0.0.1:{activated} " in serving
    assert get(f"http://127.0.0.1:{activated}/healthz").status == 200
    assert not accepts(configured)  # it did not bind LINKD_PORT
    assert daemon.stop()[0] == 0


# -- the internal API on a listener of its own ------------------------------------------------------


def api_get(url: str, token: str | None) -> Response:
    return Browser("application/json").get(url, headers={"Authorization": f"Bearer {token}"} if token else {})


def test_the_api_port_serves_the_api_only_the_main_port_everything_else_and_both_drain(
    start: Callable[..., Daemon], notify: NotifySocket, fake: Fake
) -> None:
    token, api_port = secrets.token_urlsafe(40), free_port()
    daemon = start(
        env={"NOTIFY_SOCKET": notify.address},
        LINKD_API_TOKEN=token,
        LINKD_API_PORT=str(api_port),
        LINKD_SHUTDOWN_TIMEOUT="5",
    )
    notify.wait("READY", "1")
    _, serving = notify.wait("STATUS", "serving on")
    assert f"127.0.0.1:{daemon.port} with 1 worker(s), API on 127.0.0.1:{api_port}" in serving
    api = f"http://127.0.0.1:{api_port}"
    fake.state.expires_in = 60  # inside the refresh margin: every token read refreshes first
    assert connect_flow(Browser("application/json"), daemon.url).status == 200

    listed = api_get(f"{api}/api/v1/connections", token)
    assert listed.status == 200, listed.text
    (connection,) = listed.json()["connections"]
    assert api_get(f"{api}/api/v1/connections", None).status == 401
    assert api_get(f"{daemon.url}/api/v1/connections", token).status == 404  # not on the public port
    assert api_get(f"{daemon.url}/api/v1/openapi.json", token).status == 404
    assert get(f"{api}/example/login").status == 404  # the OAuth routes are not on the API port
    assert get(f"{api}/").status == 404
    assert get(f"{api}/healthz").status == 200

    # a token read in flight on the API port (held at the platform's token endpoint) finishes
    fake.entered.clear()
    fake.release.clear()
    url = f"{api}/api/v1/connections/{connection['id']}/token"
    thread, result = in_background(lambda: api_get(url, token))
    assert fake.entered.wait(10), "the token read never reached the token endpoint"
    daemon.signal(signal.SIGTERM)
    notify.wait("STOPPING", "1")
    deadline = time.monotonic() + 5  # both listeners stop accepting while the request drains
    while (accepts(api_port) or accepts(daemon.port)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not accepts(api_port) and not accepts(daemon.port)
    assert daemon.proc.poll() is None  # still waiting for the request in flight

    response = released_answer(fake, thread, result)
    assert response.json()["access_token"] in fake.state.minted
    assert daemon.proc.wait(10) == 0
    log = daemon.log()
    assert "1 request(s) finished, 0 cut at the deadline" in log
    assert token not in log


def test_socket_activation_still_binds_the_api_port_itself(
    start: Callable[..., Daemon], notify: NotifySocket
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    activated = listener.getsockname()[1]
    token, api_port = secrets.token_urlsafe(40), free_port()
    wrapper = [sys.executable, "-c", ACTIVATE, str(listener.fileno())]
    daemon = start(
        env={"NOTIFY_SOCKET": notify.address},
        wrapper=wrapper,
        pass_fds=(listener.fileno(),),
        LINKD_API_TOKEN=token,
        LINKD_API_PORT=str(api_port),
    )
    listener.close()
    notify.wait("READY", "1")
    assert api_get(f"http://127.0.0.1:{api_port}/api/v1/openapi.json", token).status == 200
    assert api_get(f"http://127.0.0.1:{activated}/api/v1/openapi.json", token).status == 404
    assert get(f"http://127.0.0.1:{activated}/healthz").status == 200
    assert daemon.stop()[0] == 0


def test_an_api_port_that_is_taken_fails_the_start(
    start: Callable[..., Daemon], notify: NotifySocket
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        api_port = taken.getsockname()[1]
        daemon = start(
            env={"NOTIFY_SOCKET": notify.address},
            LINKD_API_TOKEN=secrets.token_urlsafe(40),
            LINKD_API_PORT=str(api_port),
        )
        assert daemon.proc.wait(START_TIMEOUT) == 1
    assert f"cannot listen on 127.0.0.1:{api_port} for the API" in daemon.log()
    assert not accepts(daemon.port)  # the main socket was released, not left bound


# -- failures ---------------------------------------------------------------------------------------


def test_bad_config_exits_2_before_ready(start: Callable[..., Daemon], notify: NotifySocket) -> None:
    daemon = start(env={"NOTIFY_SOCKET": notify.address}, EXAMPLE_BASE_URL="http://evil.example.com/ex")
    assert daemon.proc.wait(START_TIMEOUT) == 2
    assert "EXAMPLE_BASE_URL" in daemon.log()
    assert daemon.secret not in daemon.log()  # type: ignore[attr-defined]
    notify.collect(0.05)
    assert not notify.times("READY", 0)


def test_worker_that_cannot_open_the_databases_fails_the_start(
    start: Callable[..., Daemon], notify: NotifySocket, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("not a directory")
    daemon = start(env={"NOTIFY_SOCKET": notify.address}, SESSION_DB_PATH=str(tmp_path / "file" / "s.db"))
    code = daemon.proc.wait(START_TIMEOUT)
    assert code in (1, 2), daemon.log()
    assert "failed to start" in daemon.log()
    assert not notify.times("READY", 0)
    notify.wait("STOPPING", "1")


# -- logs -----------------------------------------------------------------------------------------


def test_no_secret_code_state_or_token_in_any_log_line_at_debug(
    start: Callable[..., Daemon], notify: NotifySocket, fake: Fake
) -> None:
    daemon = start(env={"NOTIFY_SOCKET": notify.address}, LINKD_LOG_LEVEL="DEBUG")
    notify.wait("READY", "1")
    browser = Browser("application/json")
    done = connect_flow(browser, daemon.url)
    assert done.status == 200, done.text
    authorize = urllib.parse.urlsplit(done.history[0].location)
    callback = done.history[1].location
    state = dict(urllib.parse.parse_qsl(authorize.query))["state"]
    # replays and probes that carry the same values in places Tornado might log
    assert browser.get(callback).status == 400
    assert get(f"{daemon.url}/nowhere?{urllib.parse.urlsplit(callback).query}").status == 404
    code = next(v for v in fake.state.minted if v.startswith("code_"))
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as raw:
        raw.sendall(
            f"GET /example/callback?code={code} HTTP/1.1\r\nHost: x\r\nX-Hmac: {code}\x01\r\n\r\n".encode()
        )
        raw.recv(1024)
    assert daemon.stop()[0] == 0

    log = daemon.log()
    verifier = fake.state.token_requests[0]["code_verifier"]
    challenge = dict(urllib.parse.parse_qsl(authorize.query))["code_challenge"]
    session = browser.cookie("session_id")
    leaks = {
        "master secret": daemon.secret,  # type: ignore[attr-defined]
        "client secret": fake.settings["EXAMPLE_CLIENT_SECRET"],
        "state": state,
        "code verifier": verifier,
        "code challenge": challenge,
        **{f"minted #{i} ({value.split('_')[0]})": value for i, value in enumerate(fake.state.minted)},
    }
    if session is not None and session.value:
        leaks["session cookie"] = session.value
    found = [name for name, value in leaks.items() if value and value in log]
    assert not found, f"leaked into the log: {found}"
    lines = log.splitlines()
    assert any("GET /example/callback 200" in line and " rid=-" not in line for line in lines)
    assert all(line.startswith("ts=") for line in lines), [
        line for line in lines if not line.startswith("ts=")
    ]


# -- the helpers, in process -------------------------------------------------------------------------


def test_notifier_is_silent_and_safe_outside_systemd() -> None:
    assert not Notifier({}).enabled
    assert Notifier({}).ready("x") is False
    broken = Notifier({"NOTIFY_SOCKET": "/nonexistent/notify"})
    assert broken.enabled and broken.watchdog() is False  # never raises
    environ = {"NOTIFY_SOCKET": "@x"}
    assert Notifier(environ).address == "\0x" and "NOTIFY_SOCKET" not in environ


def test_systemd_variables_for_another_pid_are_ignored() -> None:
    environ = {"LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid() + 1)}
    assert listen_sockets(environ) == [] and environ == {}
    assert watchdog_interval({"WATCHDOG_USEC": "400000"}) == 0.2
    assert watchdog_interval({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval({}) is None


def test_redact_scrubs_queries_pairs_bearers_and_registered_values() -> None:
    register_secret("registered-value-123")
    line = (
        "GET /cb?code=abc&state=def uri='/x?hmac=123' refresh_token=rt_1 "
        '{"access_token": "at_1"} Authorization: Bearer tok.en registered-value-123'
    )
    cleaned = redact(line)
    for value in ("abc", "def", "hmac=123", "rt_1", "at_1", "tok.en", "registered-value-123"):
        assert value not in cleaned, (value, cleaned)
    assert redact("worker 1 serving on 127.0.0.1:5000") == "worker 1 serving on 127.0.0.1:5000"
