"""`linkd migrate-store --to postgresql://…`: move a SQLite deployment into PostgreSQL.

Everything is copied as it is stored: keyed hashes and sealed values stay
byte-identical, so the same `STATE_TOKEN_SECRET` opens them on the other side, and
row ids are kept, so connection ids that other services hold stay valid. Each
table is copied in key order, in batches, each batch one transaction with
`ON CONFLICT DO NOTHING`: an interrupted run is resumed by running it again, and a
run over a complete copy changes nothing and says so. At the end the identity
sequences are moved past the copied ids and the row counts of both sides are
compared. The SQLite files are only read (stop linkd on them first: a row changed
after it was copied is not copied again).
"""

# ruff: noqa: S608 -- SQL text interpolates only the table and column names of TABLES; values are bound.
from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from ..config import load_settings
from ..errors import ConfigError, LinkdError
from . import sqlite_migrations as sqlite_schema

BATCH = 500


@dataclass(frozen=True)
class Table:
    name: str
    role: str  # which SQLite database holds it
    key: tuple[str, ...]  # copy order; unique in both databases
    columns: tuple[str, ...]
    identity: bool = False  # an id that PostgreSQL generates: bump its sequence after the copy


_CONNECTION_COLUMNS = (
    "id",
    "user_id",
    "provider",
    "account_id",
    "parent_id",
    "name",
    "kind",
    "tokens_sealed",
    "profile_sealed",
    "scopes",
    "status",
    "expires_at",
    "refresh_expires_at",
    "refresh_owner",
    "refresh_until",
    "created_at",
    "updated_at",
)

# In foreign-key order: users before connections. Connections go in without parent_id first,
# then get it in a second pass, because a child row can be older (smaller id) than its parent.
TABLES = (
    Table("users", sqlite_schema.TOKEN, ("id",), ("id", "uuid_hash", "uuid_sealed", "created_at")),
    Table("connections", sqlite_schema.TOKEN, ("id",), _CONNECTION_COLUMNS, identity=True),
    Table(
        "webhook_events",
        sqlite_schema.TOKEN,
        ("provider", "event_hash"),
        ("provider", "event_hash", "seen_at"),
    ),
    Table(
        "deletions", sqlite_schema.TOKEN, ("provider", "code"), ("provider", "code", "status", "created_at")
    ),
    Table(
        "audit", sqlite_schema.TOKEN, ("id",), ("id", "at", "actor", "action", "connection_id"), identity=True
    ),
    Table(
        "sessions",
        sqlite_schema.SESSION,
        ("id_hash",),
        ("id_hash", "user_sealed", "created_at", "expires_at"),
    ),
    Table(
        "states",
        sqlite_schema.SESSION,
        ("state_hash",),
        ("state_hash", "session_hash", "provider", "payload_sealed", "created_at", "expires_at"),
    ),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--to",
        dest="to_url",
        metavar="URL",
        help="postgresql://user:password@host:port/dbname (default: LINKD_DATABASE_URL from the "
        "environment or the env file, which keeps the password out of the process list)",
    )
    parser.add_argument("--session-db", help="SQLite file with sessions and states (SESSION_DB_PATH)")
    parser.add_argument("--token-db", help="SQLite file with users and connections (TOKEN_DB_PATH)")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"rows per transaction (default {BATCH})")


def run(args: argparse.Namespace) -> int:
    """Copy, then verify; 0 when the target holds exactly the source's rows."""
    overrides = {
        name: value
        for name, value in (("SESSION_DB_PATH", args.session_db), ("TOKEN_DB_PATH", args.token_db))
        if value
    }
    settings = load_settings(getattr(args, "env_file", None), overrides, require_secret=False)
    url = args.to_url or settings.database_url
    if not url:
        raise ConfigError(["migrate-store needs --to postgresql://… (or LINKD_DATABASE_URL)"])
    if urllib.parse.urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise ConfigError(["--to must be a postgresql:// URL"])
    paths = {sqlite_schema.SESSION: settings.session_db_path, sqlite_schema.TOKEN: settings.token_db_path}
    copier = Copier(paths, url, batch=max(1, args.batch), err=sys.stderr)
    return copier.run(sys.stdout)


class Progress:
    """One bar per table on stderr: redrawn in place on a terminal, one line per table otherwise."""

    def __init__(self, out: TextIO, name: str, total: int) -> None:
        self.out, self.name, self.total = out, name, total
        self.tty = out.isatty()
        self.done = 0
        self.last = 0.0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty and now - self.last > 0.1:
            self.last = now
            self.out.write("\r" + self.line())
            self.out.flush()

    def line(self) -> str:
        width = 30
        filled = width if not self.total else min(width, width * self.done // self.total)
        return f"{self.name:<15} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"

    def finish(self, note: str) -> None:
        self.out.write(("\r" if self.tty else "") + self.line() + (f"  {note}" if note else "") + "\n")
        self.out.flush()


class Copier:
    def __init__(
        self, paths: dict[str, str], url: str, *, batch: int = BATCH, err: TextIO = sys.stderr
    ) -> None:
        self.paths = {role: os.path.abspath(p) for role, p in paths.items()}
        self.url = url
        self.batch = batch
        self.err = err

    # source -------------------------------------------------------------------------------------------
    def _open_sources(self) -> dict[str, sqlite3.Connection]:
        """The SQLite files, read-only, after checking they hold the schema this linkd knows."""
        roles_by_path: dict[str, list[str]] = {}
        for role in sqlite_schema.ROLES:
            roles_by_path.setdefault(self.paths[role], []).append(role)
        conns: dict[str, sqlite3.Connection] = {}
        for path, roles in roles_by_path.items():
            if not os.path.isfile(path):
                raise ConfigError([f"{path}: no SQLite database there (set --session-db/--token-db)"])
            uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=10)
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version != sqlite_schema.target_version(roles):
                conn.close()
                raise ConfigError(
                    [
                        f"{path}: SQLite schema version {version} is not the one this linkd writes "
                        f"({sqlite_schema.target_version(roles)}); run `linkd check` on it with this "
                        "version of linkd first"
                    ]
                )
            for role in roles:
                conns[role] = conn
        return conns

    @staticmethod
    def _rows(src: sqlite3.Connection, table: Table, batch: int) -> Iterator[list[tuple[Any, ...]]]:
        """Batches in key order (keyset pagination: no OFFSET, constant cost per batch)."""
        cols, key = ", ".join(table.columns), ", ".join(table.key)
        first = f"SELECT {cols} FROM {table.name} ORDER BY {key} LIMIT ?"
        after = (
            f"SELECT {cols} FROM {table.name} WHERE ({key}) > ({', '.join('?' * len(table.key))}) "
            f"ORDER BY {key} LIMIT ?"
        )
        positions = [table.columns.index(k) for k in table.key]
        rows = src.execute(first, (batch,)).fetchall()
        while rows:
            yield rows
            last = [rows[-1][i] for i in positions]
            rows = src.execute(after, (*last, batch)).fetchall()

    # target --------------------------------------------------------------------------------------------
    def _prepare_target(self) -> str:
        """Create or migrate the PostgreSQL schema (clear errors when unreachable); its safe name."""
        from .postgresql import PostgreSQLStore

        async def prepare() -> str:
            store = PostgreSQLStore(self.url, threads=1)
            await store.open()
            await store.close()
            return store.describe()

        return asyncio.run(prepare())

    def _copy_table(self, src: sqlite3.Connection, dst: Any, table: Table, total: int) -> int:
        cols = list(table.columns)
        values = [f"%({c})s" for c in cols]
        if table.name == "connections":
            values[cols.index("parent_id")] = "NULL"  # set by _link_parents once every row is in
        insert = (
            f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join(values)}) "
            "ON CONFLICT DO NOTHING"
        )
        progress = Progress(self.err, table.name, total)
        inserted = 0
        for rows in self._rows(src, table, self.batch):
            with dst.transaction(), dst.cursor() as cur:
                cur.executemany(insert, [dict(zip(cols, r, strict=True)) for r in rows])
                inserted += max(cur.rowcount, 0)
            progress.advance(len(rows))
        progress.finish(f"{inserted} copied" if inserted else "already there")
        return inserted

    def _link_parents(self, src: sqlite3.Connection, dst: Any) -> int:
        """Second pass over connections: give every child its parent_id (idempotent)."""
        rows = src.execute(
            "SELECT parent_id, id FROM connections WHERE parent_id IS NOT NULL ORDER BY id"
        ).fetchall()
        changed = 0
        sql = "UPDATE connections SET parent_id = %s WHERE id = %s AND parent_id IS DISTINCT FROM %s"
        for start in range(0, len(rows), self.batch):
            chunk = rows[start : start + self.batch]
            with dst.transaction(), dst.cursor() as cur:
                cur.executemany(sql, [(p, i, p) for p, i in chunk])
                changed += max(cur.rowcount, 0)
        return changed

    @staticmethod
    def _bump_sequence(src: sqlite3.Connection, dst: Any, table: Table) -> bool:
        """Move the identity sequence past every id SQLite ever handed out; never backwards."""
        seq = src.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table.name,)).fetchone()
        floor = max(
            int(seq[0]) if seq else 0,
            int(src.execute(f"SELECT coalesce(max(id), 0) FROM {table.name}").fetchone()[0]),
        )
        if floor <= 0:
            return False
        name = _scalar(dst, "SELECT pg_get_serial_sequence(%s, 'id')", (table.name,))
        last, called = dst.execute(f"SELECT last_value, is_called FROM {name}").fetchone()
        if (last if called else last - 1) >= floor:
            return False
        dst.execute("SELECT setval(%s, %s, true)", (name, floor))
        return True

    @staticmethod
    def _refuse_foreign_target(
        sources: dict[str, sqlite3.Connection], dst: Any, totals: dict[str, int], where: str
    ) -> None:
        """Copy only into an empty database or a (partial) copy of these files: never merge deployments."""
        counts = {t.name: int(_scalar(dst, f"SELECT count(*) FROM {t.name}")) for t in TABLES}
        more = [name for name in counts if counts[name] > totals[name]]
        sample = [
            r[0] for r in sources[sqlite_schema.TOKEN].execute("SELECT id FROM users ORDER BY id LIMIT 100")
        ]
        unknown = (
            counts["users"] > 0
            and sample
            and not _scalar(dst, "SELECT count(*) FROM users WHERE id = ANY(%s)", (sample,))
        )
        if more or unknown:
            raise LinkdError(
                f"{where} already holds other linkd data ("
                + (f"more rows than the SQLite files in {', '.join(more)}" if more else "other users")
                + "); nothing was copied. Point --to at an empty database."
            )

    # the whole run -----------------------------------------------------------------------------------------
    def run(self, out: TextIO) -> int:
        import psycopg

        sources = self._open_sources()
        try:
            where = self._prepare_target()
            totals = {
                t.name: int(sources[t.role].execute(f"SELECT count(*) FROM {t.name}").fetchone()[0])
                for t in TABLES
            }
            self.err.write(f"copying {sum(totals.values())} rows from SQLite into {where}\n")
            try:
                with psycopg.connect(
                    self.url, autocommit=True, application_name="linkd-migrate-store"
                ) as dst:
                    self._refuse_foreign_target(sources, dst, totals, where)
                    copied = {
                        t.name: self._copy_table(sources[t.role], dst, t, totals[t.name]) for t in TABLES
                    }
                    parents = self._link_parents(sources[sqlite_schema.TOKEN], dst)
                    bumped = [
                        t.name for t in TABLES if t.identity and self._bump_sequence(sources[t.role], dst, t)
                    ]
                    counts = {t.name: int(_scalar(dst, f"SELECT count(*) FROM {t.name}")) for t in TABLES}
            except psycopg.Error as exc:
                raise LinkdError(
                    f"copy into {where} failed ({type(exc).__name__}, SQLSTATE {exc.sqlstate or 'none'}); "
                    "the batches already copied are kept: run the command again to resume"
                ) from None
        finally:
            for conn in set(sources.values()):
                conn.close()
        return self._report(out, where, totals, copied, parents, bumped, counts)

    @staticmethod
    def _report(
        out: TextIO,
        where: str,
        totals: dict[str, int],
        copied: dict[str, int],
        parents: int,
        bumped: Sequence[str],
        counts: dict[str, int],
    ) -> int:
        summary = ", ".join(f"{k}={v}" for k, v in counts.items())
        wrong = {k: (totals[k], counts[k]) for k in totals if totals[k] != counts[k]}
        if wrong:
            detail = "; ".join(f"{k}: SQLite {a}, PostgreSQL {b}" for k, (a, b) in wrong.items())
            out.write(
                f"verification FAILED: row counts differ ({detail}). The target already held other rows, "
                "or linkd wrote to SQLite during the copy: stop it and run this again.\n"
            )
            return 1
        if not any(copied.values()) and not parents and not bumped:
            out.write(f"nothing to do: {where} already holds every row of the SQLite files ({summary})\n")
            return 0
        out.write(f"copied {sum(copied.values())} rows into {where}")
        if bumped:
            out.write(f"; id sequences moved past the copied ids ({', '.join(bumped)})")
        out.write(f"\nverified: row counts match ({summary})\n")
        return 0


def _scalar(conn: Any, sql: str, args: Sequence[Any] = ()) -> Any:
    row = conn.execute(sql, args).fetchone()
    return row[0] if row is not None else None


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m linkd.store.migrate …`: the same command without the `linkd` front end."""
    parser = argparse.ArgumentParser(prog="linkd migrate-store", description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", help="read settings from this file instead of ./.env")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ConfigError as exc:
        print("linkd: configuration problems:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    except LinkdError as exc:
        print(f"linkd: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
