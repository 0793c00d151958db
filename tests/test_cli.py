"""The operator commands, run as a user would (subprocesses), against a linkd serving the same files."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from linkd.crypto import Keyring, random_token
from linkd.errors import SealError
from linkd.rotation import KeyRotation
from linkd.service import Services
from linkd.store import SQLiteStore
from providers.oauth2_sandbox import Grant

from .browser import Browser
from .conftest import World, linkd_cli
from .test_api import connect, connection_id, current_token

OLD, NEW, WRONG = (random_token(48) for _ in range(3))


@pytest.fixture
def world(make_world: Any) -> World:
    made: World = make_world(LINKD_PROVIDERS="example", STATE_TOKEN_SECRET=OLD)
    return made


def cli(world: World, *args: str, code: int = 0, env: dict[str, str] | None = None) -> Any:
    """Run `linkd ARGS` with the world's settings (and `env` changes); check the exit status."""
    full = {**world.settings.env, **(env or {})}
    result = linkd_cli(*args, env={k: v for k, v in full.items() if v}, cwd=world.data_dir.parent)
    assert result.returncode == code, (args, result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result


def cli_json(world: World, *args: str, code: int = 0, env: dict[str, str] | None = None) -> Any:
    return json.loads(cli(world, *args, "--json", code=code, env=env).stdout)


def services(world: World) -> Services:
    assert world.services is not None
    return world.services


def no_secret_in(world: World, text: str) -> None:
    for secret in world.sandboxes["example"].minted:
        assert secret not in text
    assert OLD not in text and NEW not in text


def test_users_and_connections_as_tables_and_json(world: World) -> None:
    first, second = connect(world, "user-1"), connect(world, "user-2")
    users = cli_json(world, "users")
    assert sorted((u["uuid"], u["connections"]) for u in users) == sorted([(first, 1), (second, 1)])
    table = cli(world, "users").stdout
    assert table.splitlines()[0].split() == ["UUID", "CREATED", "CONNECTIONS"] and first in table

    everything = cli_json(world, "connections")
    assert [(c["account_id"], c["status"], c["provider"]) for c in everything] == [
        ("user-1", "active", "example"),
        ("user-2", "active", "example"),
    ]
    assert everything[0]["user_uuid"] == first and "access_token" not in everything[0]
    assert [c["account_id"] for c in cli_json(world, "connections", "--provider", "example")] == [
        "user-1",
        "user-2",
    ]
    assert [c["account_id"] for c in cli_json(world, "connections", "--account", "user-2")] == ["user-2"]
    assert [c["account_id"] for c in cli_json(world, "connections", "--user", second)] == ["user-2"]
    assert cli_json(world, "connections", "--status", "reconnect") == []
    assert cli_json(world, "connections", "--provider", "shopify") == []
    table = cli(world, "connections").stdout
    assert table.splitlines()[0].split()[:3] == ["ID", "PROVIDER", "ACCOUNT"] and "user-2" in table
    no_secret_in(world, table + json.dumps(everything))
    bad = cli(world, "connections", "--user", "nope", code=1)
    assert bad.stderr.strip() == "linkd: The user id is not a UUID."


def test_token_is_masked_unless_shown_and_every_read_is_audited(world: World) -> None:
    connect(world)
    cid = connection_id(world, "user-1")
    token = current_token(world, "user-1")
    people = cli(world, "token", str(cid)).stdout
    assert token not in people and token[:4] + "..." in people and "expires" in people
    scripts = cli_json(world, "token", str(cid))
    assert scripts["access_token"] != token and scripts["connection_id"] == cid and scripts["expires_at"] > 0
    assert cli(world, "token", str(cid), "--show").stdout == token + "\n"
    assert cli_json(world, "token", str(cid), "--show")["access_token"] == token
    audit = world.sql("tokens", "SELECT actor, action, connection_id FROM audit ORDER BY id")
    assert [a[1:] for a in audit] == [("token_inspect", cid)] * 2 + [("token_read", cid)] * 2
    assert all(a[0].startswith("cli") for a in audit)
    assert "No such connection" in cli(world, "token", "4242", code=1).stderr
    assert "whole number" in cli(world, "token", "abc", code=1).stderr


def test_disconnect_revokes_and_the_running_daemon_sees_it(world: World) -> None:
    first, second = connect(world, "user-1"), connect(world, "user-2")
    one, two = connection_id(world, "user-1"), connection_id(world, "user-2")
    fake = world.sandboxes["example"]
    result = cli_json(world, "disconnect", str(one))
    assert result["revoked"] == [one] and [c["id"] for c in result["removed"]] == [one]
    assert fake.counts["revoke"] == 1
    assert world.run(lambda: services(world).store.get_connection(one)) is None

    out = cli(world, "disconnect", "--user", second, "--no-revoke").stdout
    assert f"removed connection {two} (example user-2" in out
    assert fake.counts["revoke"] == 1  # --no-revoke sent nothing
    assert world.count("tokens", "connections") == 0 and world.count("tokens", "users") == 1
    assert [u["uuid"] for u in cli_json(world, "users")] == [first]
    assert "No such connection" in cli(world, "disconnect", str(one), code=1).stderr
    assert "either a connection ID or --user" in cli(world, "disconnect", code=2).stderr


def test_export_holds_everything_but_tokens(world: World) -> None:
    uuid = connect(world)
    cid = connection_id(world, "user-1")
    data = cli_json(world, "export", "--user", uuid)
    assert data["user"]["uuid"] == uuid and data["user"]["created_at"] > 0
    [conn] = data["connections"]
    assert conn["id"] == cid and conn["account_id"] == "user-1" and conn["name"] == "Example user-1"
    assert conn["has_token"] is True and conn["profile"] == {} and conn["created_at"] > 0
    assert any("tokens" in item for item in data["not_included"])
    people = cli(world, "export", "--user", uuid).stdout
    assert uuid in people and "Example user-1" in people
    no_secret_in(world, json.dumps(data) + people)
    assert (
        "No such user"
        in cli(world, "export", "--user", "00000000-0000-4000-8000-000000000000", code=1).stderr
    )
    assert ("export", None) in world.sql("tokens", "SELECT action, connection_id FROM audit")


# key rotation ---------------------------------------------------------------------------------------------
SEALED = {
    "users": ("id", ["uuid_sealed"]),
    "connections": ("id", ["tokens_sealed", "profile_sealed"]),
    "sessions": ("id_hash", ["user_sealed"]),
    "states": ("state_hash", ["payload_sealed"]),
}


def sealed_cells(data_dir: Path) -> dict[tuple[str, Any, str], tuple[str, str]]:
    """(table, key, column) → (row key, sealed value) for every sealed cell in the data dir's files."""
    cells = {}
    for db, tables in (("tokens.db", ("users", "connections")), ("sessions.db", ("sessions", "states"))):
        with sqlite3.connect(data_dir / db) as conn:
            for table in tables:
                key, columns = SEALED[table]
                extra = ", provider, account_id" if table == "connections" else ""
                for row in conn.execute(f"SELECT {key}, {', '.join(columns)}{extra} FROM {table}"):
                    for i, column in enumerate(columns, start=1):
                        if row[i] is None:
                            continue
                        row_key = {
                            "users": f"user:{row[0]}",
                            "sessions": f"session:{row[0]}",
                            "states": f"state:{row[0]}",
                        }.get(table) or f"connection:{row[-2]}:{row[-1]}" + (
                            ":profile" if "profile" in column else ""
                        )
                        cells[(table, row[0], column)] = (row_key, row[i])
    return cells


def opens(secret: str, cells: dict[Any, tuple[str, str]]) -> int:
    keyring, count = Keyring(secret), 0
    for row_key, sealed in cells.values():
        try:
            keyring.open(row_key, sealed)
            count += 1
        except SealError:
            pass
    return count


class Worlds:
    """Worlds started one after the other on the same data dir, each closed exactly once."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.running: World | None = None

    def restart(self, **env: str) -> World:
        self.stop()
        self.running = World(self.data_dir, {"LINKD_PROVIDERS": "example", **env})
        return self.running

    def stop(self) -> None:
        if self.running is not None:
            self.running.close()
            self.running = None


@pytest.fixture
def worlds(tmp_path: Path) -> Iterator[Worlds]:
    started = Worlds(tmp_path / "data")
    yield started
    started.stop()


def test_rotation_across_restarts_while_serving(worlds: Worlds) -> None:
    world = worlds.restart(STATE_TOKEN_SECRET=OLD)
    browser = Browser("application/json")
    world.sandboxes["example"].next_subject = "user-1"
    assert browser.follow(world.url + "/example/login").status == 200
    uuid = browser.get(world.url + "/").json()["user_uuid"]
    Browser().get(world.url + "/example/login")  # a flow left half-way: a session and a state
    cid = connection_id(world, "user-1")
    token = current_token(world, "user-1")
    data_dir = world.data_dir
    worlds.stop()
    before = sealed_cells(data_dir)
    assert {t for t, _, _ in before} == {"users", "connections", "sessions", "states"}
    assert opens(OLD, before) == len(before) and opens(NEW, before) == 0

    # the new secret is current, the old one previous: everything still opens, in the daemon and the CLI
    serving = worlds.restart(STATE_TOKEN_SECRET=NEW, STATE_TOKEN_SECRET_PREVIOUS=OLD)
    assert browser.get(serving.url + "/").json()["user_uuid"] == uuid  # the old session, found and opened
    both = {"STATE_TOKEN_SECRET": NEW, "STATE_TOKEN_SECRET_PREVIOUS": OLD}
    assert cli(serving, "token", str(cid), "--show", env=both).stdout.strip() == token

    rotated = cli(serving, "rotate-keys", "--json", "--progress", env=both)
    report = json.loads(rotated.stdout)
    # users: the sealed UUID and its hash; sessions: only the signed-in one has a UUID; states: the open flow
    assert report["rewritten"] == {"users": 2, "connections": 1, "sessions": 1, "states": 1}
    assert sum(report["unreadable"].values()) == 0 and report["dry_run"] is False
    assert "connections" in rotated.stderr and "[" in rotated.stderr  # the progress bar, asked for
    after = sealed_cells(data_dir)
    assert opens(NEW, after) == len(after) == len(before) and opens(OLD, after) == 0
    assert browser.get(serving.url + "/").json()["user_uuid"] == uuid  # the daemon never noticed

    again = cli(serving, "rotate-keys", "--check", env=both)  # resumable: a second run finds nothing to do
    assert again.stderr == ""  # no progress bar when stderr is not a terminal and none was asked for
    assert "everything is sealed under the current secret" in again.stdout

    # the old secret is gone: still everything opens, and the user is found by the re-computed hash
    only_new = {"STATE_TOKEN_SECRET": NEW, "STATE_TOKEN_SECRET_PREVIOUS": ""}
    final = worlds.restart(**only_new)
    assert browser.get(final.url + "/").json()["user_uuid"] is None  # sessions keyed by the old hash end
    assert cli(final, "token", str(cid), "--show", env=only_new).stdout.strip() == token
    assert cli_json(final, "export", "--user", uuid, env=only_new)["user"]["uuid"] == uuid
    assert [c["account_id"] for c in cli_json(final, "connections", "--user", uuid, env=only_new)] == [
        "user-1"
    ]

    # a wrong secret: a clean refusal, and nothing changed
    wrong = {"STATE_TOKEN_SECRET": WRONG, "STATE_TOKEN_SECRET_PREVIOUS": ""}
    snapshot = sealed_cells(data_dir)
    refused = cli(final, "rotate-keys", env=wrong, code=2)
    assert "STATE_TOKEN_SECRET" in refused.stderr and "Nothing was changed" in refused.stderr
    assert WRONG not in refused.stderr + refused.stdout and NEW not in refused.stderr
    assert sealed_cells(data_dir) == snapshot
    unreadable = cli(final, "token", str(cid), env=wrong, code=1)
    assert "could not be decrypted" in unreadable.stderr and token not in unreadable.stdout


def test_rotation_reports_cells_no_key_opens_and_rotates_the_rest(world: World) -> None:
    connect(world, "user-1")
    connect(world, "user-2")
    one, two = connection_id(world, "user-1"), connection_id(world, "user-2")
    [(moved,)] = world.sql("tokens", "SELECT tokens_sealed FROM connections WHERE id = ?", (two,))
    # user-2's sealed tokens on user-1's row: bound to another row, they must not open
    world.sql("tokens", "UPDATE connections SET tokens_sealed = ? WHERE id = ?", (moved, one))
    both = {"STATE_TOKEN_SECRET": NEW, "STATE_TOKEN_SECRET_PREVIOUS": OLD}
    result = cli(world, "rotate-keys", "--batch", "1", env=both, code=1)
    assert "1 value(s) open with none of the configured secrets" in result.stdout
    report = cli_json(world, "rotate-keys", "--check", code=1, env=both)  # one value is still not current
    assert report["unreadable"]["connections"] == 1 and report["rewritten"]["connections"] == 0
    cells = sealed_cells(world.data_dir)
    assert opens(NEW, cells) == len(cells) - 1
    assert "could not be decrypted" in cli(world, "token", str(one), env=both, code=1).stderr
    assert cli_json(world, "token", str(two), "--show", env=both)["access_token"] == current_token(
        world, "user-2"
    )


def test_rotation_never_overwrites_what_the_daemon_wrote_meanwhile(worlds: Worlds) -> None:
    """A refresh lands between the rotation's read and its write: the fresh token stays, and gets checked."""
    world = worlds.restart(STATE_TOKEN_SECRET=OLD)
    connect(world)
    cid = connection_id(world, "user-1")
    daemon = worlds.restart(STATE_TOKEN_SECRET=NEW, STATE_TOKEN_SECRET_PREVIOUS=OLD)
    fake = daemon.sandboxes["example"]

    class RacingStore(SQLiteStore):
        raced = False

        async def rewrite_sealed(self, changes: Any) -> int:
            if not self.raced and any(c.table == "connections" for c in changes):
                self.raced = True  # the daemon refreshes the token now, as another process would
                daemon.run(lambda: services(daemon).tokens.usable(cid, force=True))
            return await super().rewrite_sealed(changes)

    # the new fake never issued the old grant: teach it, as the real platform would know it
    [(sealed,)] = daemon.sql("tokens", "SELECT tokens_sealed FROM connections WHERE id = ?", (cid,))
    old_tokens = Keyring(OLD).open("connection:example:user-1", sealed)
    fake.refresh[old_tokens["refresh_token"]] = Grant(subject="user-1", hint=None, scope="profile")

    async def rotate() -> Any:
        store = RacingStore(daemon.settings.session_db_path, daemon.settings.token_db_path)
        await store.open()
        try:
            return await KeyRotation(store, Keyring(NEW, [OLD])).run()
        finally:
            await store.close()

    report = asyncio.run(rotate())
    assert fake.counts["token"] == 1  # the refresh happened, during the rotation
    assert report.changed_meanwhile == 1 and report.unsettled == []
    [(stored,)] = daemon.sql("tokens", "SELECT tokens_sealed FROM connections WHERE id = ?", (cid,))
    assert Keyring(NEW).open("connection:example:user-1", stored)["access_token"] == current_token(
        daemon, "user-1"
    )
    cells = sealed_cells(daemon.data_dir)
    assert opens(NEW, cells) == len(cells)
