"""Storage: the interface every backend implements, its row types, and the SQLite backend."""

from .base import (
    ConnectionFilter,
    ConnectionRow,
    ConnectionWrite,
    DeletionRow,
    LinkOutcome,
    Reseal,
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
    "Reseal",
    "SQLiteStore",
    "SessionRow",
    "StateRow",
    "Store",
    "UserRow",
]
