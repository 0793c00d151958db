"""What both SQL backends share about rows: column lists, INSERT text, tuples into `base` rows.

Only the SQL dialect differs between SQLite and PostgreSQL (`?` against `%s`, `IN (…)`
against `= ANY(…)`); how a row maps to its columns is written once, here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, Protocol, TypeVar

from .base import ConnectionRow, DeletionRow, SessionRow, StateRow, UserRow

T = TypeVar("T")

CONNECTION_STATUSES = ("active", "reconnect")


class _Cursor(Protocol):
    def fetchone(self) -> Any: ...


def columns(row_type: type) -> str:
    """The column list of a row dataclass, in its field order (the tables use the same names)."""
    return ", ".join(f.name for f in fields(row_type))


SESSION_COLS = columns(SessionRow)
STATE_COLS = columns(StateRow)
USER_COLS = columns(UserRow)
CONN_COLS = columns(ConnectionRow)
DELETION_COLS = columns(DeletionRow)


def insert(table: str, row: Any, placeholder: str) -> tuple[str, list[Any]]:
    """The INSERT statement for a row dataclass, and its values, with the dialect's placeholder."""
    names = [f.name for f in fields(row)]
    marks = ", ".join([placeholder] * len(names))
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})", [getattr(row, n) for n in names]  # noqa: S608


def one(row_type: Callable[..., T], cursor: _Cursor) -> T | None:
    """The cursor's first row as `row_type`, or None."""
    row = cursor.fetchone()
    return row_type(*row) if row is not None else None


def connection(values: Sequence[Any]) -> ConnectionRow:
    return ConnectionRow(*values)


def by_id(row: ConnectionRow) -> int:
    return row.id


def check_status(status: str) -> None:
    """`set_status` takes only the statuses a connection can have."""
    if status not in CONNECTION_STATUSES:
        raise ValueError(f"unknown connection status {status!r}")
