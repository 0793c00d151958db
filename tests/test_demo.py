"""`linkd demo` as a newcomer runs it: one command, a URL to open, sandboxes inside, Ctrl-C to stop.

And the other side of the promise: `linkd serve` never mounts a sandbox, whatever its
environment asks for.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from linkd.config import settings_from_env
from linkd.crypto import random_token
from linkd.demo import mount_sandboxes
from linkd.plugins import get_plugin_manager

from .browser import Browser
from .processes import clean_env, start_linkd, stop, wait_healthy, write_env_file
from .servers import free_port

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
URL_LINE = re.compile(r"Open (http://127\.0\.0\.1:[0-9]+)/")
DATA_LINE = re.compile(r"Data: (\S+)")


@dataclass
class Demo:
    """A `linkd demo` process, its output as it arrives, and how long it took to be usable."""

    proc: subprocess.Popen[str]
    url: str = ""
    data_dir: str = ""
    printed_after: float = 0.0  # seconds from spawn to the printed URL
    healthy_after: float = 0.0  # seconds from spawn to the first 200 on /healthz
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if match := pattern.search(line):
                    return match
            try:
                arrived = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no line matching {pattern.pattern}:\n{self.output}") from None
            if arrived is None:
                self._queue.put(None)  # stays at end of output for the next reader
                raise RuntimeError(f"linkd demo exited ({self.proc.poll()}):\n{self.output}")
            self.lines.append(arrived)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def interrupt(self, timeout: float = 20.0) -> int:
        """Ctrl-C, as in a terminal; returns the exit status once every line is read."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout)
        while (line := self._queue.get(timeout=5)) is not None:
            self.lines.append(line)
        return code


def start_demo(*args: str, port: int | None = None) -> Demo:
    """`python -m linkd demo --port N` with none of the caller's linkd settings in its environment."""
    env = clean_env()
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "linkd", "demo", "--port", str(port or free_port()), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    demo = Demo(proc)
    threading.Thread(target=demo._read, daemon=True).start()
    try:
        demo.url = demo.wait_for(URL_LINE).group(1)
        demo.printed_after = time.monotonic() - started
        demo.data_dir = demo.wait_for(DATA_LINE).group(1)
        wait_healthy(demo.url, timeout=30)
        demo.healthy_after = time.monotonic() - started
    except BaseException:
        kill(demo)
        raise
    return demo


def kill(demo: Demo) -> None:
    if demo.proc.poll() is None:
        os.killpg(demo.proc.pid, signal.SIGKILL)
        demo.proc.wait(5)


def record_start_time(demo: Demo) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    line = (
        f"linkd demo: URL printed {demo.printed_after * 1000:.0f} ms after spawn, "
        f"/healthz answered {demo.healthy_after * 1000:.0f} ms after spawn\n"
    )
    with (ARTIFACTS / "demo-start-times.txt").open("a") as f:
        f.write(line)
    print(line, end="")


def test_demo_starts_serves_its_sandboxes_and_stops_cleanly_on_ctrl_c() -> None:
    demo = start_demo()
    try:
        record_start_time(demo)
        demo.wait_for(re.compile(r"Press Ctrl-C to stop"))
        assert "Connect Shopify" in demo.output and "Connect Facebook" in demo.output
        assert Path(demo.data_dir).is_dir() and "temporary" in demo.output

        page = Browser("text/html").get(demo.url + "/")
        assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
        assert '<html lang="en">' in page.text
        assert 'action="/shopify/login"' in page.text and 'action="/facebook/login"' in page.text

        # the sandboxes are mounted on the same process, and nothing approves on the person's behalf
        browser = Browser("text/html")
        login = browser.get(demo.url + "/shopify/login?shop=acme")
        assert login.status == 302 and login.location.startswith(demo.url + "/_sandbox/shopify/")
        consent = browser.get(login.location)
        assert consent.status == 200 and "Install app" in consent.text and "read_products" in consent.text
        dialog = browser.get(demo.url + "/_sandbox/facebook/v26.0/dialog/oauth")
        assert dialog.status == 400 and "Invalid App ID" in dialog.text  # the fake dialog, refusing
    finally:
        if demo.proc.poll() is None:
            code = demo.interrupt()
    assert code == 0, demo.output
    assert "Traceback" not in demo.output
    assert f"its temporary data in {demo.data_dir} was removed" in demo.output
    assert not Path(demo.data_dir).exists()


def connect_shop_over_http(demo: Demo, shop: str) -> Any:
    """The connect a person makes, over plain HTTP: the consent page's Approve is its GET with decision."""
    browser = Browser("text/html")
    consent = browser.follow(f"{demo.url}/shopify/login?shop={shop}")
    assert consent.status == 200 and "Install app" in consent.text
    done = browser.follow(consent.url + "&decision=approve")
    home = browser.get(demo.url + "/")
    return done, home


def test_demo_keeps_a_data_dir_it_was_given_and_reads_it_again(tmp_path: Path) -> None:
    data = tmp_path / "demo-data"
    first = start_demo("--data-dir", str(data))
    try:
        record_start_time(first)
        assert first.data_dir == str(data) and "temporary" not in first.output
        done, home = connect_shop_over_http(first, "acme")
        assert done.status == 200 and "Shopify connected" in done.text and "Acme" in home.text
    finally:
        code = first.interrupt()
    assert code == 0, first.output
    assert f"its data is kept in {data}" in first.output
    assert (data / "tokens.db").exists() and (data / "sessions.db").exists()
    assert (data / "demo.secret").stat().st_mode & 0o077 == 0

    second = start_demo("--data-dir", str(data))  # a later run opens what the first one sealed
    try:
        done, home = connect_shop_over_http(second, "acme")
        assert done.status == 200 and "Shopify connected" in done.text, done.text
    finally:
        assert second.interrupt() == 0, second.output


def test_demo_refuses_a_port_in_use() -> None:
    demo = start_demo()
    try:
        port = urllib.parse.urlsplit(demo.url).port
        assert port is not None
        second = subprocess.run(
            [sys.executable, "-m", "linkd", "demo", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert second.returncode != 0 and f"port {port} is in use" in second.stderr
    finally:
        assert demo.interrupt() == 0


def test_serve_never_mounts_a_sandbox_even_when_its_environment_asks(tmp_path: Path) -> None:
    """`serve` given the demo's own provider settings (pointing at /_sandbox/…) and every flag one
    could guess: the login goes to the sandbox URL, and nothing answers there."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    base = {
        "STATE_TOKEN_SECRET": random_token(48),
        "SESSION_DB_PATH": str(tmp_path / "data" / "sessions.db"),
        "TOKEN_DB_PATH": str(tmp_path / "data" / "tokens.db"),
        "LINKD_PUBLIC_URL": url,
        "LINKD_PROVIDERS": "shopify",
        "LINKD_PROVIDERS_DIR": str(tmp_path / "providers.d"),
    }
    _, sandbox_env, _ = mount_sandboxes(url, get_plugin_manager(), settings_from_env(base))
    asks = {"LINKD_DEMO": "1", "LINKD_SANDBOX": "1", "LINKD_SANDBOXES": "shopify,facebook"}
    env_file = write_env_file(tmp_path / "linkd.env", {**base, **sandbox_env, **asks})
    proc = start_linkd(env_file, port)
    try:
        browser = Browser("application/json")
        login = browser.get(url + "/shopify/login?shop=acme")
        assert login.status == 302 and login.location.startswith(url + "/_sandbox/shopify/")
        for path in (
            urllib.parse.urlsplit(login.location).path,
            "/_sandbox/shopify/acme.myshopify.com/admin/oauth/authorize",
            "/_sandbox/facebook/v26.0/dialog/oauth",
            "/_sandbox/example/authorize",
        ):
            response = browser.get(url + path)
            assert response.status == 404 and response.json()["error"] == "not_found", path
    finally:
        assert stop(proc) == 0
