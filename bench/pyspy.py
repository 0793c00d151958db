"""`--profile`: py-spy samples of linkd's serving process during chosen workloads, and their summary.

The raw collapsed stacks land in `bench/results/profile-<cell>.txt` (feed them to
flamegraph.pl or speedscope); the summary lists where the event loop's thread spends
its busy samples, inclusive and self, so a report can quote it without a viewer.
py-spy samples wall-clock stacks of running threads: on a machine where other work
competes for the server's core, time spent waiting for the CPU shows up in whatever
frame was current (syscall returns, mostly), so read it next to the CPU figures.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

IDLE = re.compile(
    r"(select \(selectors\.py|_worker \(concurrent/futures/thread\.py:\d+\) \d+$|wait \(threading\.py)"
)


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Sample `pid` (its threads too) for `seconds` in the background; None without py-spy."""
    exe = py_spy()
    if exe is None:
        return None
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", "250"]
    cmd += ["--format", "raw", "--threads", "--nonblocking", "--output", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _frame(frame: str) -> str:
    name, _, where = frame.partition(" (")
    return f"{name} ({where.split(':')[0]})" if where else name


def summarize(raw: Path, top: int = 30) -> str:
    """Inclusive and self shares of the busy samples of the thread that serves (the event loop)."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not frames or "MainThread" not in frames[0] or IDLE.search(line):
            continue
        n = int(count)
        total += n
        for name in {_frame(f) for f in frames[1:]}:
            inclusive[name] += n
        own[_frame(frames[-1])] += n
    if not total:
        return f"{raw.name}: no busy samples of the main thread"
    lines = [f"{raw.name}: {total} busy samples of the event loop's thread", "inclusive:"]
    skip = ("asyncio/", "linkd/cli.py", "linkd/daemon.py", "<module>", "threading.py")
    lines += [
        f"  {100 * n / total:5.1f}%  {name}"
        for name, n in inclusive.most_common(top * 2)
        if not any(s in name for s in skip)
    ][:top]
    lines.append("self:")
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top // 2)]
    return "\n".join(lines)
