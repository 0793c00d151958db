"""The `linkd` command: parse arguments, load settings, hand over to the module that does the work."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from . import __version__, scaffold
from .config import Settings, load_settings
from .crypto import random_token
from .errors import ConfigError, LinkdError

if TYPE_CHECKING:
    from .service import Services

EXIT_CONFIG = 2
T = TypeVar("T")

# flag dest → setting name: flags override the environment and `.env`
FLAG_SETTINGS = {
    "host": "LINKD_HOST",
    "port": "LINKD_PORT",
    "workers": "LINKD_WORKERS",
    "public_url": "LINKD_PUBLIC_URL",
    "log_level": "LINKD_LOG_LEVEL",
    "providers": "LINKD_PROVIDERS",
    "session_db": "SESSION_DB_PATH",
    "token_db": "TOKEN_DB_PATH",
    "database_url": "LINKD_DATABASE_URL",
}

Handler = Callable[[argparse.Namespace], int]
Arguments = Callable[[argparse.ArgumentParser], None]
COMMANDS: dict[str, tuple[str, Arguments, Handler]] = {}


def command(name: str, help_text: str, arguments: Arguments | None = None) -> Callable[[Handler], Handler]:
    def wrap(fn: Handler) -> Handler:
        COMMANDS[name] = (help_text, arguments or (lambda p: None), fn)
        return fn

    return wrap


def settings_from(args: argparse.Namespace, *, require_secret: bool = True) -> Settings:
    overrides = {
        setting: str(getattr(args, dest))
        for dest, setting in FLAG_SETTINGS.items()
        if getattr(args, dest, None) is not None
    }
    return load_settings(getattr(args, "env_file", None), overrides, require_secret=require_secret)


def server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="listen address (LINKD_HOST)")
    parser.add_argument("--port", type=int, help="listen port (LINKD_PORT)")
    parser.add_argument("--workers", type=int, help="worker processes (LINKD_WORKERS)")
    parser.add_argument("--public-url", help="external base URL (LINKD_PUBLIC_URL)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (LINKD_LOG_LEVEL)")
    parser.add_argument("--providers", help="comma-separated providers to enable (LINKD_PROVIDERS)")


def store_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session-db", help="SQLite file for sessions and states (SESSION_DB_PATH)")
    parser.add_argument("--token-db", help="SQLite file for users and connections (TOKEN_DB_PATH)")
    parser.add_argument("--database-url", help="postgresql://… instead of SQLite (LINKD_DATABASE_URL)")


def _serve_flags(parser: argparse.ArgumentParser) -> None:
    server_flags(parser)
    store_flags(parser)


@command("serve", "run the daemon (foreground; systemd-friendly)", _serve_flags)
def cmd_serve(args: argparse.Namespace) -> int:
    from .daemon import serve

    return serve(settings_from(args), reload=lambda: settings_from(args))


@command("secret", "print a freshly generated strong secret for STATE_TOKEN_SECRET")
def cmd_secret(args: argparse.Namespace) -> int:
    print(random_token(48))
    return 0


def _providers_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


@command("providers", "list discovered provider plugins and what they miss", _providers_flags)
def cmd_providers(args: argparse.Namespace) -> int:
    from .service import discover

    settings = settings_from(args, require_secret=False)
    _, registry = discover(settings)
    entries = sorted(registry.entries.values(), key=lambda e: e.name)
    rows = [
        {
            "name": e.name,
            "title": e.cls.display_name(),
            "distribution": e.distribution,
            "version": e.version,
            "enabled": e.enabled,
            "missing": e.problems,
        }
        for e in entries
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print_table(
        ["NAME", "FROM", "ENABLED", "PROBLEMS"],
        [
            [
                r["name"],
                f"{r['distribution']} {r['version']}",
                "yes" if r["enabled"] else "no",
                "; ".join(e.problems),
            ]
            for r, e in zip(rows, entries, strict=True)
        ],
    )
    return 0


@command("check", "validate configuration and database access without serving", store_flags)
def cmd_check(args: argparse.Namespace) -> int:
    from .service import build_services

    settings = settings_from(args)

    async def run() -> tuple[dict[str, int], list[tuple[str, str]]]:
        services = await build_services(settings)
        try:
            await services.store.ping()
            disabled = [
                (e.name, p) for e in services.registry.entries.values() if not e.enabled for p in e.problems
            ]
            return await services.store.counts(), disabled
        finally:
            await services.close()

    counts, disabled = asyncio.run(run())
    for name, problem in disabled:
        print(f"warning: provider {name} disabled: {problem}", file=sys.stderr)
    print(f"configuration ok; database ok ({', '.join(f'{k}={v}' for k, v in counts.items())})")
    return 0


@command("new-provider", "write a ready-to-install provider plugin package", scaffold.add_arguments)
def cmd_new_provider(args: argparse.Namespace) -> int:
    return scaffold.run(args)


def _purge_flags(parser: argparse.ArgumentParser) -> None:
    store_flags(parser)
    json_flag(parser)


@command("purge", "delete expired sessions and states now", _purge_flags)
def cmd_purge(args: argparse.Namespace) -> int:
    from .service import make_store

    settings = settings_from(args)

    async def run() -> dict[str, int]:
        store = make_store(settings)
        await store.open()
        try:
            return await store.purge(time.time())
        finally:
            await store.close()

    counts = asyncio.run(run())
    if args.json:
        print(json.dumps(counts))
    else:
        print("purged: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def _demo_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", type=int, default=None, help="port on 127.0.0.1 (default 5000, else a free one)"
    )
    parser.add_argument("--data-dir", help="keep the demo's data here instead of a temporary directory")
    parser.add_argument("--open", action="store_true", help="open the page in a browser")
    parser.add_argument("--log-level", default="INFO", help="log level")


@command("demo", "run linkd with sandbox providers and zero configuration", _demo_flags)
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(port=args.port, data_dir=args.data_dir, open_browser=args.open, log_level=args.log_level)


# operating on what was linked (use-cases in linkd/admin.py) ----------------------------------------------
def json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def admin_flags(parser: argparse.ArgumentParser) -> None:
    store_flags(parser)
    json_flag(parser)


def with_services(args: argparse.Namespace, use: Callable[[Services], Awaitable[T]]) -> T:
    """Build the services the daemon uses (same store, same providers), run `use`, close them.

    Warnings (a revoke the platform refused) go to stderr as the daemon's redacted log lines.
    """
    from .daemon import protect_secrets
    from .logs import setup_logging
    from .service import build_services

    settings = settings_from(args)
    setup_logging("WARNING")
    protect_secrets(settings)

    async def run() -> T:
        services = await build_services(settings)
        try:
            return await use(services)
        finally:
            await services.close()

    return asyncio.run(run())


def actor() -> str:
    """Who did it, for the audit log: the operator's login name."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


def when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(epoch)) if epoch is not None else "-"


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


@command("users", "list users and how many connections each has", admin_flags)
def cmd_users(args: argparse.Namespace) -> int:
    from .admin import Admin

    rows = with_services(args, lambda s: Admin(s, actor()).users())
    if args.json:
        print_json(rows)
    else:
        print_table(
            ["UUID", "CREATED", "CONNECTIONS"],
            [[r["uuid"], when(r["created_at"]), r["connections"]] for r in rows],
        )
    return 0


def _connections_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--provider", help="only this provider")
    parser.add_argument("--status", choices=("active", "reconnect"), help="only this status")
    parser.add_argument("--account", help="only this account id")
    parser.add_argument("--user", metavar="UUID", help="only this user's connections")
    admin_flags(parser)


@command("connections", "list connections (never their tokens)", _connections_flags)
def cmd_connections(args: argparse.Namespace) -> int:
    from .admin import Admin

    async def use(services: Services) -> list[dict[str, Any]]:
        admin = Admin(services, actor())
        user_id = (await admin.find_user(args.user)).id if args.user else None
        return await admin.all_connections(
            provider=args.provider, status=args.status, account_id=args.account, user_id=user_id
        )

    rows = with_services(args, use)
    if args.json:
        print_json(rows)
        return 0
    print_table(
        ["ID", "PROVIDER", "ACCOUNT", "NAME", "KIND", "PARENT", "STATUS", "EXPIRES", "USER"],
        [
            [
                r["id"],
                r["provider"],
                r["account_id"],
                r["name"],
                r["kind"],
                r["parent_id"] or "-",
                r["status"],
                when(r["expires_at"]),
                r["user_uuid"],
            ]
            for r in rows
        ],
    )
    return 0


def _token_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "connection_id", metavar="CONNECTION_ID", help="the connection's id (see `linkd connections`)"
    )
    parser.add_argument("--show", action="store_true", help="print the access token itself (audited)")
    admin_flags(parser)


@command(
    "token", "a usable access token (refreshed when due): expiry and a masked form, or --show", _token_flags
)
def cmd_token(args: argparse.Namespace) -> int:
    from .admin import Admin, mask, parse_connection_id

    connection_id = parse_connection_id(args.connection_id)
    action = "token_read" if args.show else "token_inspect"
    data = with_services(args, lambda s: Admin(s, actor()).token(connection_id, action))
    if not args.show:
        data["access_token"] = mask(data.pop("access_token"))
    if args.json:
        print_json(data)
    elif args.show:
        print(data["access_token"])
    else:
        left = f" (in {int((data['expires_at'] - time.time()) // 60)} min)" if data["expires_at"] else ""
        print(f"connection {data['connection_id']} ({data['provider']} {data['account_id']})")
        print(f"  token    {data['access_token']}  (use --show to print it)")
        print(f"  expires  {when(data['expires_at'])}{left}")
        print(f"  scopes   {' '.join(data['scopes']) or '-'}")
    return 0


def _disconnect_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "connection_id", metavar="ID", nargs="?", help="the connection to remove (and its children)"
    )
    parser.add_argument("--user", metavar="UUID", help="remove this user and every connection instead")
    parser.add_argument(
        "--no-revoke", action="store_true", help="delete locally without revoking at the platform"
    )
    admin_flags(parser)


@command(
    "disconnect", "revoke at the platform, then delete a connection (or a whole user)", _disconnect_flags
)
def cmd_disconnect(args: argparse.Namespace) -> int:
    from .admin import Admin, parse_connection_id

    if (args.connection_id is None) == (args.user is None):
        raise ConfigError(["disconnect needs either a connection ID or --user UUID"])
    revoke = not args.no_revoke

    async def use(services: Services) -> dict[str, Any]:
        admin = Admin(services, actor())
        if args.user:
            return (await admin.delete_user(args.user, revoke=revoke)).to_json()
        return (await admin.disconnect(parse_connection_id(args.connection_id), revoke=revoke)).to_json()

    result = with_services(args, use)
    if args.json:
        print_json(result)
        return 0
    for r in result["removed"]:
        print(f"removed connection {r['id']} ({r['provider']} {r['account_id']}, {r['name']})")
    if result["revoked"]:
        print("revoked at the platform: " + ", ".join(map(str, result["revoked"])))
    if result["revoke_failed"]:
        print("revoking failed (deleted here all the same): " + ", ".join(map(str, result["revoke_failed"])))
    return 0


def _export_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", metavar="UUID", required=True, help="the user whose data to export")
    admin_flags(parser)


@command("export", "everything held about a user, without tokens (for data requests)", _export_flags)
def cmd_export(args: argparse.Namespace) -> int:
    from .admin import Admin

    data = with_services(args, lambda s: Admin(s, actor()).export(args.user))
    if args.json:
        print_json(data)
        return 0
    print(f"user {data['user']['uuid']}, created {when(data['user']['created_at'])}")
    for c in data["connections"]:
        print(f"\nconnection {c['id']}: {c['provider']} {c['account_id']} ({c['name']}, {c['kind']})")
        print(f"  status {c['status']}, linked {when(c['created_at'])}, updated {when(c['updated_at'])}")
        print(f"  scopes {' '.join(c['scopes']) or '-'}")
        for key, value in sorted(c["profile"].items()):
            print(f"  {key}: {json.dumps(value) if not isinstance(value, str) else value}")
    print("\nnot included: " + "; ".join(data["not_included"]))
    return 0


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
    from .admin import KeyRotation

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


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    for row in [headers, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linkd", description="Account-linking daemon.")
    parser.add_argument("--version", action="version", version=f"linkd {__version__}")
    parser.add_argument("--env-file", help="read settings from this file instead of ./.env")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, arguments, fn) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--env-file", help="read settings from this file instead of ./.env", default=argparse.SUPPRESS
        )
        arguments(p)
        p.set_defaults(func=fn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_CONFIG
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print("linkd: configuration problems:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except LinkdError as exc:
        print(f"linkd: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
