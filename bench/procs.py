"""Processes for the benchmark: start pinned to a core, wait for the first 200, read CPU and RSS.

Every figure about a server comes from the kernel (`/proc/PID/stat` for CPU,
`/proc/PID/smaps_rollup` for memory), never from the server's own report.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

TICKS = os.sysconf("SC_CLK_TCK")
HAS_TASKSET = shutil.which("taskset") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cmd: Sequence[str], cpu: str | None) -> list[str]:
    """`cmd` run under `taskset -c cpu` (unpinned when cpu is empty or taskset is missing)."""
    if cpu and HAS_TASKSET:
        return ["taskset", "-c", cpu, *cmd]
    return list(cmd)


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()  # fields from the 3rd of stat(5) on


def tree(pid: int) -> list[int]:
    """`pid` and every live descendant (linkd serve forks its workers; the peer is one process)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                children.setdefault(int(_stat(int(entry))[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def cpu_seconds(pid: int, pids: Sequence[int] | None = None) -> float:
    """utime + stime of the process tree (every thread of every process), in seconds."""
    total = 0
    for p in pids if pids is not None else tree(pid):
        with contextlib.suppress(OSError):
            fields = _stat(p)
            total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return total / TICKS


def memory_mb(pid: int) -> dict[str, float]:
    """Memory of the process tree in MB.

    `rss_mb`: RSS of the root plus the private pages of its descendants, so pages a
    forked worker still shares with its parent count once (for one process: its RSS).
    `rss_sum_mb`: plain RSS summed over the tree (shared pages counted in every process).
    `pss_mb`: PSS summed over the tree (shared pages split between their users).
    """
    rss = rss_sum = pss = 0
    for p in tree(pid):
        fields: dict[str, int] = {}
        with contextlib.suppress(OSError), open(f"/proc/{p}/smaps_rollup") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if rest.strip().endswith("kB"):
                    fields[name] = int(rest.split()[0])
        rss_sum += fields.get("Rss", 0)
        pss += fields.get("Pss", 0)
        rss += (
            fields.get("Rss", 0)
            if p == pid
            else fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
        )
    return {"rss_mb": rss / 1024, "rss_sum_mb": rss_sum / 1024, "pss_mb": pss / 1024}


def http_status(url: str, timeout: float = 2.0, headers: Mapping[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@dataclass
class Server:
    """A server process started by the benchmark."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    started_at: float
    ready_after: float = float("nan")  # seconds from spawn to the first 200
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, path: str, timeout: float = 30.0) -> float:
        """Poll `path` until it answers 200; returns seconds since the process was spawned."""
        deadline = self.started_at + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            with contextlib.suppress(OSError):
                if http_status(self.url + path, timeout=0.5) == 200:
                    self.ready_after = time.monotonic() - self.started_at
                    return self.ready_after
            time.sleep(0.005)
        raise RuntimeError(f"{self.name} did not answer 200 on {path} within {timeout}s; see {self.log_path}")

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def spawn(
    name: str,
    cmd: Sequence[str],
    *,
    url: str,
    log_path: Path,
    cpu: str | None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    stdout: int | IO[Any] | None = None,
) -> Server:
    """Start `cmd` pinned to `cpu`, its output in `log_path` (a pipe nobody reads would block it)."""
    log = open(log_path, "ab")  # noqa: SIM115 -- owned by the child for its lifetime
    started = time.monotonic()
    proc = subprocess.Popen(
        pinned(cmd, cpu),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdout=log if stdout is None else stdout,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C of the benchmark reaches it through stop(), once
    )
    log.close()
    return Server(name=name, url=url, proc=proc, log_path=log_path, started_at=started)
