"""Start real `linkd serve` processes for tests, and wait for them without sleeping blindly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path


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
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LINKD_", "STATE_TOKEN", "EXAMPLE_"))}
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
