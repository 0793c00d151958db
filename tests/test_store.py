"""Contract tests for the storage backends, plus the SQLite backend's files, WAL and locks.

The contract tests take a `store` built from a picklable *spec* (a dict), so a
spawned process can build the same store; adding a backend is one more entry in
`SPECS` and one more branch in `make_store`. Tests below the SQLite line look at
files and locks directly and run against SQLite only.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import sqlite3
import stat
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from linkd.crypto import STATE, USER_INDEX, Keyring, pkce_pair, random_token
from linkd.errors import AccountConflict, ConfigError, SessionRequired, StoreBusy, StoreUnavailable
from linkd.store import (
    ConnectionFilter,
    ConnectionWrite,
    DeletionRow,
    Reseal,
    SessionRow,
    SQLiteStore,
    StateRow,
    Store,
    UserRow,
)
from linkd.store import sqlite_migrations as schema
from linkd.store.sqlite_engine import _RESTART_FRAMES

T = TypeVar("T")
KEYRING = Keyring(random_token())
MP = multiprocessing.get_context("spawn")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# backends ---------------------------------------------------------------------------------
def _sqlite_spec(tmp: Path) -> dict[str, Any]:
    data = tmp / "data"
    return {"backend": "sqlite", "session": str(data / "sessions.db"), "token": str(data / "tokens.db")}


def _sqlite_onefile_spec(tmp: Path) -> dict[str, Any]:
    path = str(tmp / "data" / "linkd.db")
    return {"backend": "sqlite", "session": path, "token": path}


def _postgresql_spec(tmp: Path) -> dict[str, Any]:
    from . import pg

    url = pg.server().new_database()  # a fresh database on the session's server (tests/pg.py)
    return {"backend": "postgresql", "url": url, "token": url.rsplit("/", 1)[1]}


SPECS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "sqlite": _sqlite_spec,
    "sqlite-onefile": _sqlite_onefile_spec,
    "postgresql": _postgresql_spec,
}
# These read the SQLite files themselves; tests/test_multihost.py checks PostgreSQL's schema and migrations.
SQLITE_FILE_TESTS = {
    "test_open_creates_schema_and_user_version",
    "test_a_new_migration_is_applied_once_and_keeps_data",
}


def make_store(spec: dict[str, Any], **kw: Any) -> Store:
    if spec["backend"] == "sqlite":
        return SQLiteStore(spec["session"], spec["token"], **kw)
    if spec["backend"] == "postgresql":
        from linkd.store.postgresql import PostgreSQLStore

        return PostgreSQLStore(spec["url"], **kw)
    raise ValueError(f"unknown backend {spec['backend']}")


@pytest.fixture(
    params=[
        pytest.param(n, marks=[pytest.mark.postgresql] if n == "postgresql" else []) for n in sorted(SPECS)
    ]
)
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "postgresql" and request.function.__name__ in SQLITE_FILE_TESTS:
        pytest.skip("looks at SQLite files; PostgreSQL's schema is checked in tests/test_multihost.py")
    return SPECS[request.param](tmp_path)


@pytest.fixture
def store(spec: dict[str, Any]) -> Iterator[Store]:
    s = make_store(spec)
    run(s.open())
    yield s
    run(s.close())


# realistic rows -------------------------------------------------------------------------------
def new_user(now: float, the_uuid: str | None = None) -> UserRow:
    the_uuid = the_uuid or str(uuid.uuid4())
    user_id = random_token(12)
    return UserRow(
        user_id, KEYRING.digest(USER_INDEX, the_uuid), KEYRING.seal(f"user:{user_id}", the_uuid), now
    )


def account(
    provider: str, account_id: str, token: str = "", children: list[ConnectionWrite] | None = None
) -> ConnectionWrite:
    tokens = {"access_token": token or random_token(), "refresh_token": random_token()}
    return ConnectionWrite(
        provider=provider,
        account_id=account_id,
        name=f"Name of {account_id}",
        kind="page" if children is None and account_id.startswith("page") else "user",
        tokens_sealed=KEYRING.seal(f"connection:{provider}:{account_id}", tokens),
        profile_sealed=KEYRING.seal(f"profile:{provider}:{account_id}", {"email": "a@example.com"}),
        scopes="read write",
        expires_at=time.time() + 3600,
        refresh_expires_at=None,
        children=children or [],
    )


def state_row(session_hash: str, now: float, ttl: float = 600) -> tuple[str, StateRow]:
    state = random_token()
    h = KEYRING.digest(STATE, state)
    verifier, _ = pkce_pair()
    payload = KEYRING.seal(f"state:{h}", {"context": {"shop": "x"}, "verifier": verifier})
    return state, StateRow(h, session_hash, "shopify", payload, now, now + ttl)


def session_row(now: float, ttl: float = 3600, user_uuid: str | None = None) -> SessionRow:
    h = random_token()
    sealed = KEYRING.seal(f"session:{h}", user_uuid) if user_uuid else None
    return SessionRow(h, sealed, now, now + ttl)


# lifecycle and migrations ---------------------------------------------------------------------------
def test_open_creates_schema_and_user_version(spec: dict[str, Any]) -> None:
    s = make_store(spec)
    run(s.open())
    run(s.close())
    paths: dict[str, list[str]] = {spec["session"]: [], spec["token"]: []}
    for role in schema.ROLES:
        paths[spec[role]].append(role)
    for path, roles in paths.items():
        with sqlite3.connect(path) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
            version = db.execute("PRAGMA user_version").fetchone()[0]
        assert version == schema.target_version(roles) > 0
        if schema.TOKEN in roles:
            assert {"users", "connections", "webhook_events", "deletions", "audit"} <= tables
            assert {"connections_provider_account", "connections_user_id", "connections_parent_id"} <= indexes
        if schema.SESSION in roles:
            assert {"sessions", "states"} <= tables


def test_reopen_is_idempotent(spec: dict[str, Any]) -> None:
    now = time.time()
    first = make_store(spec)
    run(first.open())
    run(first.save_link(account("shopify", "shop-1"), [], new_user(now), now))
    before = run(first.counts())
    run(first.close())
    for _ in range(2):
        again = make_store(spec)
        run(again.open())
        assert run(again.counts()) == before
        assert run(again.find_connection("shopify", "shop-1")) is not None
        run(again.close())


def test_a_new_migration_is_applied_once_and_keeps_data(
    spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time()
    s = make_store(spec)
    run(s.open())
    run(s.record_audit("test", "before", None, now))
    run(s.close())
    extra = "CREATE TABLE extra_table (x INTEGER); INSERT INTO extra_table VALUES (1);"
    monkeypatch.setitem(schema.MIGRATIONS, schema.TOKEN, [*schema.TOKEN_MIGRATIONS, extra])
    for _ in range(2):  # the second open must not apply it again
        s = make_store(spec)
        run(s.open())
        run(s.close())
    with sqlite3.connect(spec["token"]) as db:
        assert db.execute("SELECT count(*) FROM extra_table").fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM audit").fetchone()[0] == 1
        roles = [r for r in schema.ROLES if spec[r] == spec["token"]]
        assert schema.decode(db.execute("PRAGMA user_version").fetchone()[0], roles)[schema.TOKEN] == 2


def _open_at_once(spec: dict[str, Any], barrier: Any) -> None:
    async def main() -> None:
        s = make_store(spec)
        await s.open()
        await s.record_audit(f"pid-{os.getpid()}", "opened", None, time.time())
        await s.close()

    barrier.wait(30)
    asyncio.run(main())


def test_two_processes_open_a_fresh_database_at_once(spec: dict[str, Any]) -> None:
    barrier = MP.Barrier(2)
    procs = [MP.Process(target=_open_at_once, args=(spec, barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    s = make_store(spec)
    run(s.open())
    assert run(s.counts())["audit"] == 2
    run(s.close())


# sessions ------------------------------------------------------------------------------------------
def test_a_closed_store_opens_again_in_the_same_thread(spec: dict[str, Any]) -> None:
    """`linkd check`, tests and embedders close a store and open it again on the same thread:
    connections that thread kept from before the close must not be reused (they are closed)."""
    now = time.time()
    s = make_store(spec)

    async def cycle(row: SessionRow) -> SessionRow | None:
        await s.open()
        try:
            await s.insert_session(row)
            return await s.get_session([row.id_hash], now)
        finally:
            await s.close()

    first, second = session_row(now), session_row(now)
    assert run(cycle(first)) == first
    assert run(cycle(second)) == second


def test_session_insert_get_and_lookup_by_any_hash(store: Store) -> None:
    now = time.time()
    row = session_row(now, user_uuid=str(uuid.uuid4()))
    run(store.insert_session(row))
    assert run(store.get_session(["unknown", row.id_hash], now)) == row
    assert run(store.get_session(["unknown"], now)) is None
    assert run(store.get_session([], now)) is None


def test_expired_session_is_deleted_on_read(store: Store) -> None:
    now = time.time()
    row = session_row(now - 100, ttl=50)
    run(store.insert_session(row))
    assert run(store.counts())["sessions"] == 1
    assert run(store.get_session([row.id_hash], now)) is None
    assert run(store.counts())["sessions"] == 0


def test_replace_session_rotates_and_logs_out(store: Store) -> None:
    now = time.time()
    old, new = session_row(now), session_row(now)
    run(store.insert_session(old))
    run(store.replace_session(old.id_hash, new))
    assert run(store.get_session([old.id_hash], now)) is None
    assert run(store.get_session([new.id_hash], now)) == new
    run(store.replace_session(new.id_hash, None))
    assert run(store.get_session([new.id_hash], now)) is None
    third = session_row(now)
    run(store.replace_session(None, third))
    assert run(store.get_session([third.id_hash], now)) == third
    assert run(store.counts())["sessions"] == 1


# states -------------------------------------------------------------------------------------------
def test_state_is_consumed_once(store: Store) -> None:
    now = time.time()
    _, row = state_row("sess", now)
    run(store.insert_state(row))
    assert run(store.consume_state(["other", row.state_hash])) == row
    assert run(store.consume_state([row.state_hash])) is None
    assert run(store.consume_state([])) is None


def test_expired_state_is_returned_for_the_caller_to_reject_then_purged(store: Store) -> None:
    now = time.time()
    _, expired = state_row("sess", now - 1000, ttl=10)
    _, other = state_row("sess", now - 1000, ttl=10)
    run(store.insert_state(expired))
    run(store.insert_state(other))
    got = run(store.consume_state([expired.state_hash]))
    assert got is not None and got.expires_at < now  # consumed either way: never usable again
    assert run(store.consume_state([expired.state_hash])) is None
    assert run(store.purge(now))["states"] == 1
    assert run(store.consume_state([other.state_hash])) is None


def _consume_race(spec: dict[str, Any], hashes: list[str], consumers: int, barrier: Any, out: Any) -> None:
    async def main() -> list[int]:
        s = make_store(spec, threads=consumers)
        await s.open()
        wins = []
        for h in hashes:
            barrier.wait(30)
            results = await asyncio.gather(*(s.consume_state([h]) for _ in range(consumers)))
            wins.append(sum(r is not None for r in results))
        await s.close()
        return wins

    out.put(asyncio.run(main()))


def test_state_consumed_once_by_20_consumers_in_2_processes(store: Store, spec: dict[str, Any]) -> None:
    now = time.time()
    rows = [state_row("sess", now)[1] for _ in range(5)]
    for row in rows:
        run(store.insert_state(row))
    hashes = [r.state_hash for r in rows]
    barrier, out = MP.Barrier(2), MP.Queue()
    procs = [MP.Process(target=_consume_race, args=(spec, hashes, 10, barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert [a + b for a, b in zip(*results, strict=True)] == [1] * len(rows)
    assert run(store.counts())["states"] == 0


# save_link -----------------------------------------------------------------------------------------
def test_save_link_creates_a_user(store: Store) -> None:
    now = time.time()
    user = new_user(now)
    out = run(store.save_link(account("shopify", "shop-1"), [], user, now))
    assert out.created_user and out.user == user and out.removed == []
    [conn] = out.connections
    assert (conn.provider, conn.account_id, conn.user_id, conn.parent_id) == (
        "shopify",
        "shop-1",
        user.id,
        None,
    )
    assert conn.status == "active" and conn.created_at == conn.updated_at == now
    token = KEYRING.open("connection:shopify:shop-1", conn.tokens_sealed or "")
    assert set(token) == {"access_token", "refresh_token"}
    assert run(store.get_user([user.uuid_hash])) == user
    assert run(store.get_user_by_id(user.id)) == user


def test_relinking_an_account_keeps_its_user_and_row(store: Store) -> None:
    now = time.time()
    user = new_user(now)
    first = run(store.save_link(account("shopify", "shop-1", token="old"), [], user, now))
    later = now + 60
    second = run(store.save_link(account("shopify", "shop-1", token="new"), [], new_user(later), later))
    assert not second.created_user and second.user == user
    [row] = second.connections
    assert row.id == first.connections[0].id and row.created_at == now and row.updated_at == later
    assert KEYRING.open("connection:shopify:shop-1", row.tokens_sealed or "")["access_token"] == "new"
    assert run(store.counts())["users"] == 1


def test_session_user_links_a_second_account(store: Store) -> None:
    now = time.time()
    user = new_user(now)
    run(store.save_link(account("shopify", "shop-1"), [], user, now))
    out = run(store.save_link(account("facebook", "fb-1"), ["stale-hash", user.uuid_hash], None, now))
    assert out.user == user and not out.created_user
    assert [c.account_id for c in run(store.list_connections(ConnectionFilter(user_id=user.id)))] == [
        "shop-1",
        "fb-1",
    ]


def test_account_of_another_user_conflicts_and_changes_nothing(store: Store) -> None:
    now = time.time()
    alice, bob = new_user(now), new_user(now)
    run(store.save_link(account("shopify", "shop-a", token="alice-token"), [], alice, now))
    run(store.save_link(account("shopify", "shop-b"), [], bob, now))
    before_counts = run(store.counts())
    before_row = run(store.find_connection("shopify", "shop-a"))
    with pytest.raises(AccountConflict):
        run(
            store.save_link(
                account("shopify", "shop-a", token="evil"), [bob.uuid_hash], new_user(now), now + 1
            )
        )
    assert run(store.counts()) == before_counts
    assert run(store.find_connection("shopify", "shop-a")) == before_row


def test_no_user_and_no_new_user_requires_a_session(store: Store) -> None:
    now = time.time()
    with pytest.raises(SessionRequired):
        run(store.save_link(account("facebook", "fb-1"), ["unknown-hash"], None, now))
    assert run(store.counts())["connections"] == run(store.counts())["users"] == 0


def test_children_are_upserted_and_stale_ones_removed(store: Store) -> None:
    now = time.time()
    user = new_user(now)
    pages = [account("facebook", f"page-{i}") for i in (1, 2)]
    first = run(store.save_link(account("facebook", "fb-1", children=pages), [], user, now))
    primary, page1, page2 = first.connections
    assert primary.account_id == "fb-1" and page1.parent_id == page2.parent_id == primary.id
    later = now + 10
    pages = [account("facebook", f"page-{i}") for i in (2, 3)]
    second = run(store.save_link(account("facebook", "fb-1", children=pages), [], None, later))
    assert [c.account_id for c in second.connections] == ["fb-1", "page-2", "page-3"]
    assert second.connections[0].id == primary.id and second.connections[1].id == page2.id
    assert second.connections[1].updated_at == later and second.connections[1].created_at == now
    assert [r.account_id for r in second.removed] == ["page-1"] and second.removed[0].id == page1.id
    assert run(store.find_connection("facebook", "page-1")) is None
    assert run(store.counts())["connections"] == 3


def test_child_owned_by_another_user_conflicts_and_changes_nothing(store: Store) -> None:
    now = time.time()
    alice, bob = new_user(now), new_user(now)
    run(
        store.save_link(
            account("facebook", "fb-a", children=[account("facebook", "page-shared")]), [], alice, now
        )
    )
    before = run(store.counts())
    with pytest.raises(AccountConflict):
        run(
            store.save_link(
                account("facebook", "fb-b", children=[account("facebook", "page-shared")]), [], bob, now
            )
        )
    assert run(store.counts()) == before
    assert run(store.find_connection("facebook", "fb-b")) is None
    assert run(store.get_user_by_id(bob.id)) is None


# connections -----------------------------------------------------------------------------------
def test_delete_connections_removes_children(store: Store) -> None:
    now = time.time()
    user = new_user(now)
    run(store.save_link(account("facebook", "fb-1", children=[account("facebook", "page-1")]), [], user, now))
    run(store.save_link(account("shopify", "shop-1"), [user.uuid_hash], None, now))
    removed = run(store.delete_connections("facebook", ["fb-1", "not-there"]))
    assert [r.account_id for r in removed] == ["fb-1", "page-1"]
    assert [c.account_id for c in run(store.list_connections(ConnectionFilter()))] == ["shop-1"]
    assert run(store.delete_connections("facebook", [])) == []


def test_delete_connection_and_delete_user(store: Store) -> None:
    now = time.time()
    user = new_user(now)
    out = run(
        store.save_link(account("facebook", "fb-1", children=[account("facebook", "page-1")]), [], user, now)
    )
    run(store.save_link(account("shopify", "shop-1"), [user.uuid_hash], None, now))
    assert [r.account_id for r in run(store.delete_connection(out.connections[0].id))] == ["fb-1", "page-1"]
    run(
        store.save_link(
            account("facebook", "fb-1", children=[account("facebook", "page-1")]), [user.uuid_hash], None, now
        )
    )
    removed = run(store.delete_user(user.id))
    assert sorted(r.account_id for r in removed) == ["fb-1", "page-1", "shop-1"]
    assert run(store.get_user_by_id(user.id)) is None
    assert run(store.counts())["connections"] == 0


def test_lookups_lists_and_updates(store: Store) -> None:
    now = time.time()
    users = [new_user(now) for _ in range(3)]
    for i, user in enumerate(users):
        run(store.save_link(account("shopify", f"shop-{i}"), [], user, now))
    run(store.save_link(account("facebook", "fb-0"), [users[0].uuid_hash], None, now))
    assert [u.id for u in run(store.list_users())] == sorted(u.id for u in users)
    page = run(store.list_users(after_id=sorted(u.id for u in users)[0], limit=1))
    assert [u.id for u in page] == [sorted(u.id for u in users)[1]]
    shops = run(store.list_connections(ConnectionFilter(provider="shopify", limit=2)))
    assert [c.account_id for c in shops] == ["shop-0", "shop-1"]
    rest = run(store.list_connections(ConnectionFilter(provider="shopify", after_id=shops[-1].id)))
    assert [c.account_id for c in rest] == ["shop-2"]
    fb = run(store.find_connection("facebook", "fb-0"))
    assert fb is not None and run(store.get_connection(fb.id)) == fb
    assert run(store.get_connection(10_000)) is None
    run(store.set_status(fb.id, "reconnect", now + 1))
    assert [c.id for c in run(store.list_connections(ConnectionFilter(status="reconnect")))] == [fb.id]
    sealed = KEYRING.seal("connection:facebook:fb-0", {"access_token": "refreshed"})
    run(store.update_tokens(fb.id, sealed, now + 7200, now + 86400, now + 2))
    got = run(store.get_connection(fb.id))
    assert got is not None
    assert (got.status, got.tokens_sealed, got.expires_at, got.updated_at) == (
        "active",
        sealed,
        now + 7200,
        now + 2,
    )
    with pytest.raises(ValueError):
        run(store.set_status(fb.id, "bogus", now))


# refresh lease -------------------------------------------------------------------------------------
def test_refresh_lease_is_exclusive_until_released_or_expired(store: Store) -> None:
    now = time.time()
    cid = run(store.save_link(account("shopify", "shop-1"), [], new_user(now), now)).connections[0].id
    assert run(store.acquire_refresh_lease(cid, "a", now, 30))
    assert not run(store.acquire_refresh_lease(cid, "b", now + 1, 30))
    assert not run(store.acquire_refresh_lease(cid, "a", now + 1, 30))  # not re-entrant
    run(store.release_refresh_lease(cid, "b"))  # not the owner: no effect
    assert not run(store.acquire_refresh_lease(cid, "b", now + 2, 30))
    assert run(store.acquire_refresh_lease(cid, "b", now + 30, 30))  # a's lease expired
    run(store.release_refresh_lease(cid, "b"))
    assert run(store.acquire_refresh_lease(cid, "c", now + 31, 30))
    assert not run(store.acquire_refresh_lease(10_000, "c", now, 30))


def test_refresh_lease_has_one_winner_among_concurrent_callers(store: Store) -> None:
    now = time.time()
    cid = run(store.save_link(account("shopify", "shop-1"), [], new_user(now), now)).connections[0].id

    async def race() -> list[bool]:
        return list(
            await asyncio.gather(*(store.acquire_refresh_lease(cid, f"o{i}", now, 30) for i in range(12)))
        )

    assert sum(run(race())) == 1


# webhooks, deletions, audit, purge -------------------------------------------------------------------
def test_first_delivery_deduplicates_per_provider(store: Store) -> None:
    now = time.time()
    assert run(store.first_delivery("shopify", "evt-1", now))
    assert not run(store.first_delivery("shopify", "evt-1", now + 1))
    assert run(store.first_delivery("facebook", "evt-1", now))


def test_deletions_and_audit(store: Store) -> None:
    now = time.time()
    row = DeletionRow(random_token(8), "facebook", "pending", now)
    run(store.insert_deletion(row))
    assert run(store.get_deletion("facebook", row.code)) == row
    assert run(store.get_deletion("shopify", row.code)) is None
    run(store.record_audit("admin", "delete", 3, now))
    run(store.record_audit("system", "purge", None, now + 1))
    entries = run(store.list_audit())
    assert [(e["actor"], e["action"], e["connection_id"]) for e in entries] == [
        ("system", "purge", None),
        ("admin", "delete", 3),
    ]
    assert len(run(store.list_audit(limit=1))) == 1


def test_purge_counts_what_it_removed(store: Store) -> None:
    now = time.time()
    for ttl in (-10, -5, 100):
        run(store.insert_session(session_row(now, ttl=ttl)))
    for ttl in (-10, 100):
        run(store.insert_state(state_row("s", now, ttl=ttl)[1]))
    run(store.first_delivery("shopify", "old", now - 8 * 86400))
    run(store.first_delivery("shopify", "new", now - 86400))
    assert run(store.purge(now)) == {"sessions": 2, "states": 1, "webhook_events": 1}
    counts = run(store.counts())
    assert (counts["sessions"], counts["states"], counts["webhook_events"]) == (1, 1, 1)
    assert run(store.first_delivery("shopify", "old", now))  # forgotten ids count as new again
    assert run(store.purge(now)) == {"sessions": 0, "states": 0, "webhook_events": 0}


# key rotation --------------------------------------------------------------------------------------
def test_sessions_and_states_are_listed_in_key_order_expired_included(store: Store) -> None:
    now = time.time()
    sessions = [session_row(now, ttl=ttl) for ttl in (-10, 100, 200)]
    states = [state_row("s", now, ttl=ttl)[1] for ttl in (-10, 100)]
    for row in sessions:
        run(store.insert_session(row))
    for st in states:
        run(store.insert_state(st))
    hashes = sorted(r.id_hash for r in sessions)
    assert [r.id_hash for r in run(store.list_sessions())] == hashes
    assert [r.id_hash for r in run(store.list_sessions(after_hash=hashes[0], limit=1))] == hashes[1:2]
    assert sorted(run(store.list_states()), key=lambda r: r.state_hash) == run(store.list_states())
    assert {r.state_hash for r in run(store.list_states(limit=5))} == {r.state_hash for r in states}


def test_rewrite_sealed_is_compare_and_set_per_cell(store: Store) -> None:
    now = time.time()
    user = new_user(now)
    conn = run(store.save_link(account("shopify", "shop-1"), [], user, now)).connections[0]
    session = session_row(now, user_uuid="u")
    run(store.insert_session(session))
    _, st = state_row(session.id_hash, now)
    run(store.insert_state(st))
    assert conn.tokens_sealed is not None and session.user_sealed is not None
    changes = [
        Reseal("users", user.id, "uuid_hash", user.uuid_hash, "new-hash"),
        Reseal("users", user.id, "uuid_sealed", user.uuid_sealed, "new-uuid"),
        Reseal("connections", conn.id, "tokens_sealed", conn.tokens_sealed, "new-tokens"),
        Reseal("connections", conn.id, "profile_sealed", "not what it holds", "lost"),
        Reseal("sessions", session.id_hash, "user_sealed", session.user_sealed, "new-user"),
        Reseal("states", st.state_hash, "payload_sealed", st.payload_sealed, "new-payload"),
        Reseal("states", "gone", "payload_sealed", st.payload_sealed, "lost"),
    ]
    assert run(store.rewrite_sealed(changes)) == 5
    got_user = run(store.get_user(["new-hash"]))
    assert got_user is not None and got_user.uuid_sealed == "new-uuid"
    got = run(store.get_connection(conn.id))
    assert got is not None and got.tokens_sealed == "new-tokens" and got.profile_sealed == conn.profile_sealed
    assert [r.user_sealed for r in run(store.list_sessions())] == ["new-user"]
    assert [r.payload_sealed for r in run(store.list_states())] == ["new-payload"]
    assert run(store.rewrite_sealed(changes)) == 0  # every cell moved on: nothing is written twice
    for bad in (Reseal("users", user.id, "id", user.id, "x"), Reseal("audit", 1, "actor", "a", "b")):
        with pytest.raises(ValueError):
            run(store.rewrite_sealed([changes[2], bad]))
    assert run(store.get_connection(conn.id)) == got


def test_ping_and_describe(store: Store, spec: dict[str, Any]) -> None:
    run(store.ping())
    assert spec["token"] in store.describe()


# SQLite only: files, WAL, locks, plaintext ------------------------------------------------------------
@pytest.fixture
def paths(tmp_path: Path) -> dict[str, Any]:
    return _sqlite_spec(tmp_path)


def _db_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith((".db", ".db-wal", ".db-shm")))


def test_dir_0700_and_files_0600_whatever_the_umask(paths: dict[str, Any]) -> None:
    old = os.umask(0)
    try:
        s = make_store(paths)
        run(s.open())
    finally:
        os.umask(old)
    now = time.time()
    run(s.save_link(account("shopify", "shop-1"), [], new_user(now), now))
    run(s.insert_session(session_row(now)))
    data = Path(paths["token"]).parent
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = _db_files(data)
    assert {p.name for p in files} >= {"tokens.db-wal", "tokens.db-shm", "sessions.db-wal", "sessions.db-shm"}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o600 for p in files}
    run(s.close())


def test_refuses_a_world_readable_database_file(paths: dict[str, Any]) -> None:
    s = make_store(paths)
    run(s.open())
    run(s.close())
    os.chmod(paths["token"], 0o644)
    with pytest.raises(ConfigError) as info:
        run(make_store(paths).open())
    assert paths["token"] in str(info.value) and len(info.value.problems) == 1


def test_refuses_a_group_accessible_data_dir(paths: dict[str, Any]) -> None:
    data = Path(paths["token"]).parent
    data.mkdir(mode=0o750)
    os.chmod(data, 0o750)
    with pytest.raises(ConfigError) as info:
        run(make_store(paths).open())
    assert str(data) in str(info.value)
    assert not Path(paths["token"]).exists()


def test_a_file_that_is_not_a_database_is_unavailable_without_its_path(paths: dict[str, Any]) -> None:
    data = Path(paths["token"]).parent
    data.mkdir(mode=0o700)
    fd = os.open(paths["token"], os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"this is not a database at all " * 200)
    os.close(fd)
    with pytest.raises(StoreUnavailable) as info:
        run(make_store(paths).open())
    assert str(data) not in str(info.value) and "tokens.db" not in str(info.value)


def test_refuses_a_schema_from_a_newer_linkd(paths: dict[str, Any]) -> None:
    s = make_store(paths)
    run(s.open())
    run(s.close())
    with sqlite3.connect(paths["token"]) as db:
        db.execute("PRAGMA user_version = 999")
    with pytest.raises(ConfigError, match="newer"):
        run(make_store(paths).open())


def test_wal_is_persistent_and_synchronous_is_per_database(paths: dict[str, Any]) -> None:
    s = SQLiteStore(paths["session"], paths["token"])
    run(s.open())

    async def pragma(role: str, name: str) -> Any:
        return await s._read(role, lambda c: c.execute(f"PRAGMA {name}").fetchone()[0])

    assert run(pragma(schema.TOKEN, "synchronous")) == 2  # FULL
    assert run(pragma(schema.SESSION, "synchronous")) == 1  # NORMAL
    assert run(pragma(schema.TOKEN, "foreign_keys")) == 1
    run(s.close())
    for path in (paths["session"], paths["token"]):
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_no_plaintext_token_or_uuid_in_any_file(paths: dict[str, Any]) -> None:
    token, the_uuid, visible = (
        "EAAtoken" + random_token(),
        str(uuid.uuid4()),
        "acct-visible-" + random_token(6),
    )
    s = make_store(paths)
    run(s.open())
    now = time.time()
    user = new_user(now, the_uuid)
    page = account("facebook", "page-1", token=token)
    run(s.save_link(account("facebook", visible, token=token, children=[page]), [], user, now))
    conn = run(s.find_connection("facebook", visible))
    assert conn is not None
    run(
        s.update_tokens(
            conn.id, KEYRING.seal(f"connection:facebook:{visible}", {"access_token": token}), None, None, now
        )
    )
    session = session_row(now, user_uuid=the_uuid)
    run(s.insert_session(session))
    run(s.insert_state(state_row(session.id_hash, now)[1]))
    data = Path(paths["token"]).parent

    def grep(needle: str) -> list[str]:
        return [p.name for p in _db_files(data) if needle.encode() in p.read_bytes()]

    assert any(name.endswith("-wal") for name in grep(visible))  # the grep does see fresh WAL content
    assert grep(token) == [] and grep(the_uuid) == [] and grep(the_uuid.replace("-", "")) == []
    run(s.close())
    assert grep(visible) and grep(token) == [] and grep(the_uuid) == []


def _hold_write_lock(path: str, held: Any, release: Any, hold_for: float) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    held.set()
    release.wait(hold_for)
    db.execute("COMMIT")
    db.close()


def _start_holder(path: str, hold_for: float) -> tuple[Any, Any]:
    held, release = MP.Event(), MP.Event()
    proc = MP.Process(target=_hold_write_lock, args=(path, held, release, hold_for))
    proc.start()
    assert held.wait(30), "the lock holder did not start"
    return proc, release


def test_a_short_lock_is_waited_for(paths: dict[str, Any]) -> None:
    s = make_store(paths, lock_wait=5.0)
    run(s.open())
    holder, _ = _start_holder(paths["token"], 0.5)
    started = time.monotonic()
    run(s.record_audit("test", "late", None, time.time()))
    waited = time.monotonic() - started
    holder.join(10)
    assert 0.3 <= waited < 5.0
    assert [e["action"] for e in run(s.list_audit())] == ["late"]
    run(s.close())


def test_a_long_lock_raises_store_busy_while_reads_and_ping_stay_fast(paths: dict[str, Any]) -> None:
    now = time.time()
    s = make_store(paths, lock_wait=1.0)
    run(s.open())
    user = new_user(now)
    run(s.save_link(account("shopify", "shop-1"), [], user, now))
    holder, release = _start_holder(paths["token"], 3.0)

    async def during_hold() -> tuple[list[float], float, BaseException | None]:
        started = time.monotonic()
        write = asyncio.ensure_future(s.record_audit("test", "blocked", None, now))
        timings = []
        for call in (
            s.ping,
            lambda: s.get_user([user.uuid_hash]),
            lambda: s.find_connection("shopify", "shop-1"),
            lambda: s.list_connections(ConnectionFilter()),
            s.counts,
            lambda: s.insert_session(session_row(now)),  # the session database is not locked
        ):
            t0 = time.monotonic()
            await call()
            timings.append(time.monotonic() - t0)
        error = None
        try:
            await write
        except StoreBusy as exc:
            error = exc
        return timings, time.monotonic() - started, error

    try:
        timings, waited, error = run(during_hold())
    finally:
        release.set()
        holder.join(10)
    assert max(timings) < 0.2, timings
    assert isinstance(error, StoreBusy) and error.status == 503 and error.retry_after > 0
    assert 1.0 <= waited < 2.5
    run(s.record_audit("test", "after", None, now))  # and the store works once the lock is gone
    assert [e["action"] for e in run(s.list_audit())] == ["after"]
    run(s.close())


def test_a_locked_session_database_is_waited_for_without_stalling_the_loop(paths: dict[str, Any]) -> None:
    """Session writes run inline with busy_timeout 0: under another process's lock they must move
    to a thread at once, so the event loop keeps turning while the write waits its turn."""
    now = time.time()
    s = make_store(paths, lock_wait=5.0)
    run(s.open())
    run(s.insert_session(session_row(now)))  # the inline connection exists and has been used
    holder, _ = _start_holder(paths["session"], 0.6)

    async def write_while_ticking() -> tuple[float, float, int]:
        gaps: list[float] = []
        stop = asyncio.Event()

        async def tick() -> None:
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.005)
                gaps.append(time.monotonic() - last)
                last = time.monotonic()

        ticker = asyncio.ensure_future(tick())
        started = time.monotonic()
        await s.insert_state(state_row("sess", now)[1])
        waited = time.monotonic() - started
        stop.set()
        await ticker
        return waited, max(gaps), len(gaps)

    try:
        waited, worst_gap, ticks = run(write_while_ticking())
    finally:
        holder.join(10)
    assert 0.3 <= waited < 5.0  # it did wait for the lock...
    assert worst_gap < 0.1 and ticks > 20, (worst_gap, ticks)  # ...but not on the loop
    assert run(s.counts())["states"] == 1
    run(s.close())


def test_inline_session_writes_keep_the_wal_checkpointed(paths: dict[str, Any]) -> None:
    """Inline connections never checkpoint (that would fsync on the loop); a pool thread must,
    or the session WAL would grow with every login for as long as the process lives."""
    now = time.time()
    s = make_store(paths)
    run(s.open())
    wal = Path(paths["session"] + "-wal")

    async def churn(n: int) -> None:
        for _ in range(n):
            state_hash, row = state_row("sess", now)
            await s.insert_state(row)
            await s.consume_state([state_hash])

    run(churn(4000))  # 8,000 commits: about 64 MB of WAL if nothing ever checkpointed
    with contextlib.closing(sqlite3.connect(paths["session"])) as db:
        frame = 24 + int(db.execute("PRAGMA page_size").fetchone()[0])  # a WAL frame: header + page
    assert wal.stat().st_size < 2 * _RESTART_FRAMES * frame, wal.stat().st_size
    run(s.close())


def test_a_forgotten_delivery_is_processed_again(store: Store) -> None:
    now = time.time()
    assert run(store.first_delivery("shopify", "evt-2", now))
    assert not run(store.first_delivery("shopify", "evt-2", now + 1))
    run(store.forget_delivery("shopify", "evt-2"))  # its handling failed: the platform's retry must act
    assert run(store.first_delivery("shopify", "evt-2", now + 2))
