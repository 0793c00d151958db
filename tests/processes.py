"""Start real `linkd serve` processes for tests, and wait for them without sleeping blindly."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

# linkd's settings (the built-in providers' included) and the systemd variables a test runner
# may carry: a child linkd must read only what its test hands it.
LINKD_PREFIXES = (
    "LINKD_",
    "STATE_TOKEN",
    "SHOPIFY_",
    "FACEBOOK_",
    "EXAMPLE_",
    "SESSION_DB",
    "TOKEN_DB",
    "NOTIFY_",
    "WATCHDOG_",
    "LISTEN_",
)


def clean_env(*also: str) -> dict[str, str]:
    """This process's environment without linkd's settings (and without names starting with `also`)."""
    return {k: v for k, v in os.environ.items() if not k.startswith((*LINKD_PREFIXES, *also))}


def write_env_file(path: Path, values: Mapping[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)
    return path


def wait_healthy(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"linkd exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.05)  # polling a port with a deadline, not waiting out a race
    raise TimeoutError(f"{url} did not become healthy")


def start_linkd(
    env_file: Path, port: int, *extra: str, stderr: object = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """`linkd serve` in its own process group, secrets only in the env file (never the environment)."""
    env = clean_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "linkd", "serve", "--env-file", str(env_file), "--port", str(port), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,  # type: ignore[arg-type]
        start_new_session=True,
    )
    wait_healthy(f"http://127.0.0.1:{port}", proc)
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)
    return proc.returncode


# -- processes, read from /proc -------------------------------------------------------------------
def children_of(parent: int) -> set[int]:
    """Live (non-zombie) processes whose parent is `parent`."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == parent and state != "Z":
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# -- the socket systemd would listen on ---------------------------------------------------------------
class NotifySocket:
    """The sd_notify datagram socket; remembers every `KEY=value` line with its arrival time.

    `address` may be abstract (`@name`); without one, a socket in a fresh short temporary
    directory is made (AF_UNIX paths are limited to 108 bytes).
    """

    def __init__(self, address: str | None = None, timeout: float = 20.0) -> None:
        self.directory = None if address else tempfile.mkdtemp(prefix="linkd-notify-")
        self.address = address or os.path.join(str(self.directory), "notify")
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:] if self.address.startswith("@") else self.address)
        self.lines: list[tuple[float, str, str]] = []
        self.cursor = 0

    def _receive(self, timeout: float) -> bool:
        self.sock.settimeout(max(timeout, 0.0001))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        now = time.monotonic()
        for line in data.decode("utf-8", "replace").splitlines():
            key, _, value = line.partition("=")
            self.lines.append((now, key, value))
        return True

    def wait(self, key: str, value: str = "", timeout: float | None = None) -> tuple[float, str]:
        """The next `key=value…` line after those already waited for: (arrival time, value)."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            for i in range(self.cursor, len(self.lines)):
                at, k, v = self.lines[i]
                if k == key and v.startswith(value):
                    self.cursor = i + 1
                    return at, v
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {key}={value}… within {timeout}s; got {self.lines}")
            self._receive(remaining)

    def mark(self) -> int:
        """A position: lines received after it are news to `wait_for`."""
        while self._receive(0):
            pass
        return len(self.lines)

    def wait_for(self, text: str, since: int, timeout: float) -> str:
        """The first line after `since` that contains `text`, as `KEY=value`."""
        deadline = time.monotonic() + timeout
        while True:
            for _, key, value in self.lines[since:]:
                if text in f"{key}={value}":
                    return f"{key}={value}"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {text!r} from linkd within {timeout}s: {self.lines[since:]}")
            self._receive(remaining)

    def collect(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self._receive(remaining)

    def times(self, key: str, since: float, until: float = float("inf")) -> list[float]:
        return [at for at, k, _ in self.lines if k == key and since <= at <= until]

    def close(self) -> None:
        self.sock.close()
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
        elif not self.address.startswith("@"):
            with contextlib.suppress(OSError):
                os.unlink(self.address)
