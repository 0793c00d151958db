"""Fixtures that build a real linkd: real SQLite files, real HTTP, sandboxes on loopback."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from linkd.demo import sandbox_settings
from linkd.plugins import get_plugin_manager
from linkd.service import Services, build_services
from linkd.web import make_app

from .browser import Browser
from .processes import clean_env
from .servers import ServerThread, free_port

ROOT = Path(__file__).resolve().parent.parent


class World:
    """A running linkd (same process, own thread and loop) with every provider's sandbox mounted."""

    def __init__(self, data_dir: Path, extra_env: Mapping[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        pm = get_plugin_manager()
        env = {"LINKD_PUBLIC_URL": self.url, **(extra_env or {})}
        self.settings, handlers, self.sandboxes = sandbox_settings(self.url, str(data_dir), pm, env)
        self.services: Services | None = None
        for state in self.sandboxes.values():
            if hasattr(state, "auto_approve"):
                state.auto_approve = True  # HTTP tests skip the consent page; the browser test clicks it

        async def make() -> Any:
            self.services = await build_services(self.settings, pm=pm)
            return make_app(self.services, handlers)

        self.server = ServerThread(make, port=self.port).start()

    def browser(self, accept: str = "application/json") -> Browser:
        return Browser(accept)

    def run(self, coro_factory: Any) -> Any:
        return self.server.call(coro_factory)

    def db_files(self) -> list[Path]:
        return sorted(p for p in self.data_dir.iterdir() if p.name.endswith((".db", ".db-wal", ".db-shm")))

    def sql(self, db: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read or poke a database file directly, as an operator (or an attacker with the file) would."""
        path = self.settings.session_db_path if db == "sessions" else self.settings.token_db_path
        with sqlite3.connect(path, timeout=10) as conn:
            rows = conn.execute(query, params).fetchall()
        return rows

    def count(self, db: str, table: str) -> int:
        return int(self.sql(db, f"SELECT COUNT(*) FROM {table}")[0][0])

    def close(self) -> None:
        if self.services is not None:
            self.run(self.services.close)
        self.server.stop()


@pytest.fixture
def make_world(tmp_path: Path) -> Iterator[Any]:
    worlds: list[World] = []

    def make(**env: str) -> World:
        world = World(tmp_path / f"data{len(worlds)}", env)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.close()


@pytest.fixture
def world(make_world: Any) -> World:
    return make_world()


def linkd_cli(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout: float = 60):
    """Run the installed `linkd` command as a user would."""
    full_env = clean_env()
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "linkd", *args],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)
