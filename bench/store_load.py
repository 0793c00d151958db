"""Session-store load: create / read / delete per second, in 1 or N processes on one database.

- `linkd`: linkd's SQLiteStore through the public Store methods, the way the web layer
  uses them (`SessionManager`: a keyed hash of the cookie and the user UUID sealed,
  then `insert_session` / `get_session` / `replace_session(old, None)`), in this
  process's event loop, `--concurrency` operations in flight per process.
- `peer`:  the original app's `shared/sessions.py` `SessionStorage` imported from the peer
  directory (`store_uuid` / `get_uuid` / `clear_session`, Fernet-encrypted UUID), run
  with the peer's own interpreter.
- `sqlite`: the ceiling: raw SQLite WAL commits/s on one connection, synchronous NORMAL and FULL.

Each process creates for `--seconds`, then reads what it created for `--seconds`, then
deletes it (until done or `--seconds`); processes start each phase together (a barrier).
An operation that raises, or a read that finds nothing, counts as an error. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import secrets
import sqlite3
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

PHASES = ("create", "read", "delete")


def _phase_result(count: int, started: float, errors: Counter[str]) -> dict[str, Any]:
    return {"ops": count, "seconds": time.perf_counter() - started, "errors": dict(errors)}


# -- linkd ---------------------------------------------------------------------------------------
async def _linkd_worker(args: argparse.Namespace, barrier: Any) -> dict[str, Any]:
    sys.path.insert(0, args.src or str(Path(__file__).resolve().parents[1]))
    from linkd.crypto import Keyring
    from linkd.sessions import SessionManager
    from linkd.store.sqlite import SQLiteStore

    db = os.path.join(args.db_dir, "sessions.db")
    store = SQLiteStore(db, os.path.join(args.db_dir, "tokens.db"))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, barrier.wait)  # every process opens (and migrates) at once
    await store.open()
    sessions = SessionManager(store, Keyring(args.secret), 3600)
    made: list[tuple[str, Any]] = []
    results: dict[str, Any] = {}

    async def phase(name: str, op: Any, items: list[Any] | None) -> None:
        await loop.run_in_executor(None, barrier.wait)
        errors: Counter[str] = Counter()
        deadline = time.perf_counter() + args.seconds
        count = 0
        started = time.perf_counter()

        async def task() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                if items is not None:
                    if not items:
                        return
                    item = items.pop()
                else:
                    item = None
                try:
                    await op(item)
                except Exception as exc:
                    errors[type(exc).__name__] += 1
                count += 1

        await asyncio.gather(*(task() for _ in range(args.concurrency)))
        results[name] = _phase_result(count, started, errors)

    async def create(_: Any) -> None:
        made.append(await sessions.create(str(uuid.uuid4())))

    async def read(item: tuple[str, Any]) -> None:
        if await sessions.resolve(item[0]) is None:
            raise LookupError("session not found")

    async def delete(item: tuple[str, Any]) -> None:
        await sessions.end(item[1])

    await phase("create", create, None)
    reads = made * (1 + args.seconds_reads_factor)
    random.shuffle(reads)
    await phase("read", read, reads)
    await phase("delete", delete, list(made))
    await store.close()
    return results


# -- the peer ----------------------------------------------------------------------------------------
def _peer_worker(args: argparse.Namespace, barrier: Any) -> dict[str, Any]:
    sys.path.insert(0, args.peer_dir)
    os.environ.setdefault("STATE_TOKEN_SECRET", args.secret)
    from shared.sessions import SessionStorage  # the peer's own module, from the peer's directory

    barrier.wait()
    storage = SessionStorage(os.path.join(args.db_dir, "sessions.db"))
    made: list[tuple[str, str]] = []
    results: dict[str, Any] = {}

    def phase(name: str, op: Any, items: list[Any] | None) -> None:
        barrier.wait()
        errors: Counter[str] = Counter()
        deadline = time.perf_counter() + args.seconds
        count = 0
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            if items is not None:
                if not items:
                    break
                item = items.pop()
            else:
                item = None
            try:
                op(item)
            except Exception as exc:
                errors[type(exc).__name__] += 1
            count += 1
        results[name] = _phase_result(count, started, errors)

    def create(_: Any) -> None:
        session_id, user = storage.generate_session_id(), str(uuid.uuid4())
        storage.store_uuid(session_id, user)
        made.append((session_id, user))

    def read(item: tuple[str, str]) -> None:
        if storage.get_uuid(item[0]) != item[1]:
            raise LookupError("session not found")

    def delete(item: tuple[str, str]) -> None:
        storage.clear_session(item[0])

    phase("create", create, None)
    reads = made * (1 + args.seconds_reads_factor)
    random.shuffle(reads)
    phase("read", read, reads)
    phase("delete", delete, list(made))
    return results


# -- processes -----------------------------------------------------------------------------------------
def _child(args: argparse.Namespace, barrier: Any, queue: Any) -> None:
    try:
        if args.kind == "linkd":
            queue.put(asyncio.run(_linkd_worker(args, barrier)))
        else:
            queue.put(_peer_worker(args, barrier))
    except BaseException as exc:
        barrier.abort()
        queue.put({"failed": f"{type(exc).__name__}: {exc}"})
        raise


def run_store(args: argparse.Namespace) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(args.procs)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(args, barrier, queue)) for _ in range(args.procs)]
    for p in procs:
        p.start()
    parts = [queue.get(timeout=60 + 4 * args.seconds) for _ in procs]
    for p in procs:
        p.join()
    failed = [p["failed"] for p in parts if "failed" in p]
    if failed:
        raise SystemExit("store load failed: " + "; ".join(failed))
    summary: dict[str, Any] = {"procs": args.procs, "concurrency": args.concurrency}
    for name in PHASES:
        ops = sum(p[name]["ops"] for p in parts)
        seconds = max(p[name]["seconds"] for p in parts)
        errors: Counter[str] = Counter()
        for p in parts:
            errors.update(p[name]["errors"])
        summary[name] = {"ops": ops, "per_s": ops / seconds, "errors": sum(errors.values()), "kinds": errors}
    return summary


# -- the ceiling -------------------------------------------------------------------------------------------
def run_sqlite(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for sync in ("NORMAL", "FULL"):
        path = os.path.join(args.db_dir, f"ceiling-{sync.lower()}.db")
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {sync}")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        count = 0
        deadline = time.perf_counter() + args.seconds
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t (v) VALUES (?)", (secrets.token_hex(32),))
            conn.execute("COMMIT")
            count += 1
        result[f"commits_per_s_{sync.lower()}"] = count / (time.perf_counter() - started)
        conn.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="session store load")
    parser.add_argument("kind", choices=["linkd", "peer", "sqlite"])
    parser.add_argument("--db-dir", required=True, help="a fresh directory for the database")
    parser.add_argument("--procs", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1, help="linkd: operations in flight per process")
    parser.add_argument("--seconds", type=float, default=2.0, help="per phase")
    parser.add_argument("--peer-dir", default="", help="the peer app's directory (kind peer)")
    parser.add_argument("--src", default="", help="kind linkd: import linkd from this checkout")
    parser.add_argument("--secret", default=secrets.token_urlsafe(48))
    args = parser.parse_args()
    args.seconds_reads_factor = 3  # reads outnumber creates: cycle over what was made
    os.makedirs(args.db_dir, mode=0o700, exist_ok=True)
    result = run_sqlite(args) if args.kind == "sqlite" else run_store(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
