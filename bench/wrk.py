"""Single-request load with wrk (one thread on the load core), and its output parsed."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping

from procs import cpu_seconds, pinned, tree

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def available() -> bool:
    return shutil.which("wrk") is not None


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse(output: str) -> dict[str, float]:
    """requests/s, p50/p99 (s), requests, non-2xx/3xx answers and socket errors from `wrk --latency`."""
    result: dict[str, float] = {"errors": 0, "socket_errors": 0}
    for line in output.splitlines():
        line = line.strip()
        if m := re.match(r"(50|99)(?:\.0+)?%\s+(\S+)$", line):
            result[f"p{m.group(1)}_s"] = _seconds(m.group(2))
        elif m := re.match(r"(\d+) requests in", line):
            result["requests"] = int(m.group(1))
        elif m := re.match(r"Requests/sec:\s+([0-9.]+)", line):
            result["rps"] = float(m.group(1))
        elif m := re.match(r"Non-2xx or 3xx responses:\s+(\d+)", line):
            result["errors"] = int(m.group(1))
        elif m := re.match(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", line):
            result["socket_errors"] = sum(int(x) for x in m.groups())
    if "rps" not in result:
        raise RuntimeError("wrk printed no result:\n" + output)
    return result


def run(
    url: str,
    connections: int,
    duration: float,
    *,
    cpu: str | None,
    headers: Mapping[str, str] | None = None,
    server_pid: int | None = None,
    warmup: float = 0.0,
) -> dict[str, float]:
    """One wrk run (after an unmeasured warm-up run), with the server's CPU time per request."""
    base = ["wrk", "-t1", f"-c{connections}", "--latency", "--timeout", "10s"]
    for name, value in (headers or {}).items():
        base += ["-H", f"{name}: {value}"]
    if warmup > 0:
        subprocess.run(pinned([*base, f"-d{warmup:g}s", url], cpu), capture_output=True, check=True)
    pids = tree(server_pid) if server_pid else []
    before = cpu_seconds(0, pids) if pids else 0.0
    out = subprocess.run(
        pinned([*base, f"-d{duration:g}s", url], cpu), capture_output=True, text=True, check=True
    ).stdout
    result = parse(out)
    if pids and result.get("requests"):
        result["server_cpu_us_per_request"] = 1e6 * (cpu_seconds(0, pids) - before) / result["requests"]
    return result
