"""`linkd rotate-keys`: re-seal everything under the current secret (`rotation.py`), with progress."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .cli import admin_flags, command, print_json, print_table, with_services
from .errors import ConfigError
from .store import migrate

if TYPE_CHECKING:
    from .service import Services


def _rotate_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=200, help="rows per transaction (default 200)")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if anything is under an old key"
    )
    parser.add_argument(
        "--progress", action="store_true", help="show progress even when stderr is not a terminal"
    )
    admin_flags(parser)


@command(
    "rotate-keys",
    "re-seal everything under STATE_TOKEN_SECRET (after moving the old one to _PREVIOUS)",
    _rotate_flags,
)
def cmd_rotate_keys(args: argparse.Namespace) -> int:
    from .rotation import KeyRotation

    if not 1 <= args.batch <= 10_000:
        raise ConfigError(["--batch must be from 1 to 10000"])
    bar = ProgressBar(args.progress or sys.stderr.isatty())

    async def use(services: Services) -> dict[str, Any]:
        rotation = KeyRotation(
            services.store, services.keyring, batch=args.batch, dry_run=args.check, progress=bar
        )
        try:
            return (await rotation.run()).to_json()
        finally:
            bar.close()

    report = with_services(args, use)
    unreadable = sum(report["unreadable"].values())
    pending = sum(report["rewritten"].values())
    if args.json:
        print_json(report)
    else:
        verb = "to re-seal" if args.check else "re-sealed"
        print_table(
            ["TABLE", "ROWS", verb.upper(), "UNREADABLE"],
            [
                [t, report["scanned"][t], report["rewritten"][t], report["unreadable"][t]]
                for t in report["scanned"]
            ],
        )
        if unreadable:
            print(f"{unreadable} value(s) open with none of the configured secrets; left as they are.")
        elif report["unsettled"]:
            print(f"{', '.join(report['unsettled'])} kept changing while this ran; run it again.")
        elif args.check:
            print(
                f"{pending} value(s) {verb}" if pending else "everything is sealed under the current secret"
            )
        else:
            print("done: STATE_TOKEN_SECRET_PREVIOUS can go (browser sessions older than this end then).")
    return 1 if unreadable or report["unsettled"] or (args.check and pending) else 0


class ProgressBar:
    """`table [#####     ] done/total` on stderr, redrawn in place; silent when disabled."""

    def __init__(self, enabled: bool, width: int = 30) -> None:
        self.enabled = enabled
        self.width = width
        self.table: str | None = None

    def __call__(self, table: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.table not in (None, table):
            sys.stderr.write("\n")
        self.table = table
        filled = self.width * done // total if total else self.width
        sys.stderr.write(f"\r{table:<12} [{'#' * filled:<{self.width}}] {done}/{total}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.table is not None:
            sys.stderr.write("\n")
            sys.stderr.flush()


@command(
    "migrate-store",
    "copy the SQLite files into PostgreSQL (resumable, verified)",
    migrate.add_arguments,
)
def cmd_migrate_store(args: argparse.Namespace) -> int:
    return migrate.run(args)
