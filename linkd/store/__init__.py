"""Storage: the interface every backend implements, its row types, and the SQLite backend."""

from .base import (
    ConnectionFilter,
    ConnectionRow,
    ConnectionWrite,
    DeletionRow,
    LinkOutcome,
    SessionRow,
    StateRow,
    Store,
    UserRow,
)
from .sqlite import SQLiteStore

__all__ = [
    "ConnectionFilter",
    "ConnectionRow",
    "ConnectionWrite",
    "DeletionRow",
    "LinkOutcome",
    "SQLiteStore",
    "SessionRow",
    "StateRow",
    "Store",
    "UserRow",
]
