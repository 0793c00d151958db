"""`linkd migrate-store`: a SQLite deployment moves into PostgreSQL and keeps working there.

Rows are copied as stored (same secret, so sealed values stay valid), with their
ids; the copy resumes after an interruption and a run over a complete copy does
nothing and says so.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from linkd import cli
from linkd.store import ConnectionFilter, SQLiteStore, Store
from linkd.store.migrate import main as migrate_main
from linkd.store.postgresql import PostgreSQLStore

from .browser import Browser
from .conftest import linkd_cli
from .pg import PASSWORD, pg_server_fixture, pg_url_fixture  # noqa: F401 -- fixtures
from .processes import write_env_file
from .test_store import account, new_user, session_row, state_row

pytestmark = pytest.mark.postgresql
SECRET = "TWlncmF0ZS1zdG9yZS10ZXN0LXNlY3JldC13aXRoLWVub3VnaC1lbnRyb3B5LTk"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def migrate_store(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`linkd migrate-store …` as an operator runs it."""
    assert "migrate-store" in cli.COMMANDS
    result: subprocess.CompletedProcess[str] = linkd_cli("--env-file", str(env_file), "migrate-store", *args)
    return result


async def everything(store: Store) -> dict[str, Any]:
    """Every row the interface can list, for comparing two stores."""
    counts = await store.counts()
    return {
        "users": await store.list_users(limit=10_000),
        "connections": await store.list_connections(ConnectionFilter(limit=10_000)),
        "audit": await store.list_audit(limit=10_000),
        "counts": counts,
    }


def test_copy_keeps_every_row_and_id_resumes_and_then_does_nothing(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sessions_db, tokens_db = str(tmp_path / "data" / "sessions.db"), str(tmp_path / "data" / "tokens.db")
    source = SQLiteStore(sessions_db, tokens_db)
    now = time.time()

    async def fill() -> None:
        await source.open()
        alice = new_user(now)
        pages = [account("facebook", "page-1"), account("facebook", "page-2")]
        await source.save_link(account("facebook", "fb-1", children=pages), [], alice, now)
        # page-1 moves under a newer account: a child older (smaller id) than its parent
        await source.save_link(
            account("facebook", "fb-2", children=[account("facebook", "page-1")]),
            [alice.uuid_hash],
            None,
            now,
        )
        await source.save_link(account("shopify", "shop-1"), [], new_user(now), now)
        gone = await source.save_link(account("shopify", "shop-gone"), [], new_user(now), now)
        await source.delete_connection(gone.connections[0].id)  # the highest id ever used is gone
        for _ in range(30):
            await source.insert_session(session_row(now, user_uuid="x"))
        await source.insert_state(state_row("s", now)[1])
        await source.first_delivery("shopify", "evt-1", now)
        await source.record_audit("admin", "export", 1, now)

    run(fill())
    before = run(everything(source))
    args = ["--session-db", sessions_db, "--token-db", tokens_db, "--to", pg_url, "--batch", "7"]

    assert migrate_main(args) == 0
    out, err = capsys.readouterr()
    assert f"copied {sum(before['counts'].values())} rows into" in out and "verified: row counts match" in out
    assert "sessions" in err and "30/30" in err  # the progress, on stderr
    assert PASSWORD not in out + err and "postgres:***@" in out

    target = PostgreSQLStore(pg_url)

    async def check_target() -> dict[str, Any]:
        await target.open()
        try:
            copied = await everything(target)
            fresh = await target.save_link(account("shopify", "shop-new"), [], new_user(now), now)
            await target.delete_user(fresh.user.id)
            copied["new_id"] = fresh.connections[0].id
            return copied
        finally:
            await target.close()

    copied = run(check_target())
    new_id = copied.pop("new_id")
    assert copied == before  # same rows, same ids, same parents, same sealed bytes
    assert new_id > max(c.id for c in before["connections"]) + 1  # past the deleted one too

    # An interrupted copy: some batches never arrived. Running again copies what is missing.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM sessions WHERE id_hash IN (SELECT id_hash FROM sessions LIMIT 12)")
        conn.execute("UPDATE connections SET parent_id = NULL")
    assert migrate_main(args) == 0
    out, _ = capsys.readouterr()
    assert "copied 12 rows" in out
    assert migrate_main(args) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("nothing to do:") and "already holds every row" in out

    async def again() -> dict[str, Any]:
        await target.open()
        try:
            return await everything(target)
        finally:
            await target.close()

    assert run(again()) == before
    run(source.close())

    # Another deployment's files are never merged into it: refused before anything is written.
    other = SQLiteStore(str(tmp_path / "other" / "s.db"), str(tmp_path / "other" / "t.db"))

    async def fill_other() -> None:
        await other.open()
        await other.save_link(account("shopify", "shop-other"), [], new_user(now), now)
        await other.close()

    run(fill_other())
    other_args = [
        "--session-db",
        str(tmp_path / "other" / "s.db"),
        "--token-db",
        str(tmp_path / "other" / "t.db"),
    ]
    assert migrate_main([*other_args, "--to", pg_url]) == 1
    _, err = capsys.readouterr()
    assert "already holds other linkd data" in err and "nothing was copied" in err
    assert run(again()) == before


def test_a_linkd_on_sqlite_moves_to_postgresql_with_its_users_sessions_and_tokens(
    make_world: Any, pg_url: str, tmp_path: Path
) -> None:
    old = make_world(LINKD_PROVIDERS="example", STATE_TOKEN_SECRET=SECRET)
    fake = old.sandboxes["example"]
    alice, bob = Browser("application/json"), Browser("application/json")
    answers = []
    for browser, subject in ((alice, "alice-1"), (alice, "alice-2"), (bob, "bob-1")):
        fake.next_subject = subject
        response = browser.follow(old.url + "/example/login")
        assert response.status == 200, response.text[:300]
        answers.append(response.json())
    alice_uuid, bob_uuid = answers[0]["user_uuid"], answers[2]["user_uuid"]
    assert answers[1]["user_uuid"] == alice_uuid != bob_uuid

    async def tokens_of(services: Any) -> dict[int, str]:
        rows = await services.store.list_connections(ConnectionFilter())
        return {r.id: (await services.tokens.usable(r.id))[1].access_token for r in rows}

    tokens_before = old.run(lambda: tokens_of(old.services))
    assert len(tokens_before) == 3

    env_file = write_env_file(
        tmp_path / "migrate.env",
        {
            "SESSION_DB_PATH": old.settings.session_db_path,
            "TOKEN_DB_PATH": old.settings.token_db_path,
            "LINKD_DATABASE_URL": pg_url,  # the target, kept out of the command line
        },
    )
    first = migrate_store(env_file)
    assert first.returncode == 0, first.stderr
    assert "verified: row counts match" in first.stdout and "users=2, connections=3" in first.stdout
    assert "users" in first.stderr and "connections" in first.stderr  # the progress bars
    assert PASSWORD not in first.stdout + first.stderr
    second = migrate_store(env_file)
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("nothing to do:")

    new = make_world(LINKD_PROVIDERS="example", STATE_TOKEN_SECRET=SECRET, LINKD_DATABASE_URL=pg_url)
    assert new.services.store.describe().startswith("postgresql://")
    assert new.run(lambda: tokens_of(new.services)) == tokens_before  # same ids, same working tokens
    # Alice's browser session carries over: her next connect, on the new linkd, joins her user.
    new.sandboxes["example"].next_subject = "alice-3"
    response = alice.follow(new.url + "/example/login")
    assert response.status == 200, response.text[:300]
    assert response.json()["user_uuid"] == alice_uuid
    users = new.run(lambda: new.services.store.list_users())
    assert sorted(new.services.user_uuid_of(u.id, u.uuid_sealed) for u in users) == sorted(
        [alice_uuid, bob_uuid]
    )
