"""Key rotation: re-seal everything under the current secret after `STATE_TOKEN_SECRET` changed.

`linkd rotate-keys` (`commands_rotate.py`) runs it; the former secret stays in
`STATE_TOKEN_SECRET_PREVIOUS` until it reports that nothing is left under it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .crypto import USER_INDEX, Keyring
from .errors import ConfigError, SealError
from .store.base import RESEALABLE, ConnectionFilter, Reseal, Store

ROTATED_TABLES = ("users", "connections", "sessions", "states")


def _zeros() -> dict[str, int]:
    return dict.fromkeys(ROTATED_TABLES, 0)


@dataclass
class RotationReport:
    """Rows scanned, cells rewritten (or to rewrite, in a dry run) and cells no key opens, per table."""

    scanned: dict[str, int] = field(default_factory=_zeros)
    rewritten: dict[str, int] = field(default_factory=_zeros)
    unreadable: dict[str, int] = field(default_factory=_zeros)
    changed_meanwhile: int = 0
    unsettled: list[str] = field(default_factory=list)  # tables still changing under us after max_passes
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class KeyRotation:
    """Re-seal every sealed value under the current secret, in short compare-and-set batches.

    Safe while the daemon runs: each batch is one short transaction, and a cell that
    changed since it was read (a refresh, a consumed state) is left alone and its
    table scanned again. Resumable: a value already under the current key is skipped,
    so an interrupted run is simply run again. `users.uuid_hash` is recomputed under
    the current key; session and state hashes are not (lookups try every known key's
    hash, and those rows expire within their TTL).
    """

    def __init__(
        self,
        store: Store,
        keyring: Keyring,
        *,
        batch: int = 200,
        dry_run: bool = False,
        progress: Callable[[str, int, int], None] | None = None,
        max_passes: int = 3,
    ) -> None:
        self.store = store
        self.keyring = keyring
        self.batch = batch
        self.dry_run = dry_run
        self.progress = progress or (lambda table, done, total: None)
        self.max_passes = max_passes

    async def run(self) -> RotationReport:
        await self.preflight()
        report = RotationReport(dry_run=self.dry_run)
        totals = await self.store.counts()
        for table in ROTATED_TABLES:
            for _ in range(self.max_passes):
                conflicts = await self._pass(table, totals.get(table, 0), report)
                report.changed_meanwhile += conflicts
                if not conflicts:
                    break
            else:
                report.unsettled.append(table)
        return report

    async def preflight(self) -> None:
        """Refuse before writing anything when the configured secrets open none of the stored data."""
        cells = [
            c
            for table in ("users", "connections")
            for c in self._sample(table, await self._page(table, None, 20))
        ]
        for _, row_key, sealed in cells:
            try:
                self.keyring.open(row_key, sealed)
                return
            except SealError:
                continue
        if cells:
            raise ConfigError(
                [
                    "STATE_TOKEN_SECRET and STATE_TOKEN_SECRET_PREVIOUS open none of the stored data; "
                    "put the former secret in STATE_TOKEN_SECRET_PREVIOUS. Nothing was changed."
                ]
            )

    def _sample(self, table: str, rows: Sequence[Any]) -> list[tuple[str, str, str]]:
        return [cell for row in rows for cell in self._cells(table, row)]

    async def _pass(self, table: str, total: int, report: RotationReport) -> int:
        done = conflicts = 0
        after: Any = None
        self.progress(table, 0, total)
        while rows := await self._page(table, after, self.batch):
            after = self._key(table, rows[-1])
            changes = [change for row in rows for change in self._changes(table, row, report)]
            report.scanned[table] += len(rows)
            written = len(changes)
            if changes and not self.dry_run:
                written = await self.store.rewrite_sealed(changes)
            conflicts += len(changes) - written
            report.rewritten[table] += written
            done += len(rows)
            self.progress(table, done, max(total, done))
        return conflicts

    async def _page(self, table: str, after: Any, limit: int) -> Sequence[Any]:
        """Rows of `table` after the key `after` (None: from the start), in key order."""
        if table == "users":
            return await self.store.list_users(after_id=after or "", limit=limit)
        if table == "connections":
            return await self.store.list_connections(ConnectionFilter(after_id=after or 0, limit=limit))
        if table == "sessions":
            return await self.store.list_sessions(after_hash=after or "", limit=limit)
        return await self.store.list_states(after_hash=after or "", limit=limit)

    @staticmethod
    def _key(table: str, row: Any) -> Any:
        return getattr(row, RESEALABLE[table][0])

    @staticmethod
    def _cells(table: str, row: Any) -> list[tuple[str, str, str]]:
        """(column, row key, sealed value) of every sealed cell of a row."""
        if table == "users":
            return [("uuid_sealed", f"user:{row.id}", row.uuid_sealed)]
        if table == "connections":
            base = f"connection:{row.provider}:{row.account_id}"
            cells = [
                ("tokens_sealed", base, row.tokens_sealed),
                ("profile_sealed", f"{base}:profile", row.profile_sealed),
            ]
            return [c for c in cells if c[2]]
        if table == "sessions":
            return [("user_sealed", f"session:{row.id_hash}", row.user_sealed)] if row.user_sealed else []
        return [("payload_sealed", f"state:{row.state_hash}", row.payload_sealed)]

    def _changes(self, table: str, row: Any, report: RotationReport) -> list[Reseal]:
        key = self._key(table, row)
        changes: list[Reseal] = []
        for column, row_key, sealed in self._cells(table, row):
            try:
                value = self.keyring.open(row_key, sealed)
                new = self.keyring.reseal(row_key, sealed)
            except SealError:
                report.unreadable[table] += 1
                continue
            if new is not None:
                changes.append(Reseal(table, key, column, sealed, new))
            if table == "users" and (digest := self.keyring.digest(USER_INDEX, str(value))) != row.uuid_hash:
                changes.append(Reseal(table, key, "uuid_hash", row.uuid_hash, digest))
        return changes
