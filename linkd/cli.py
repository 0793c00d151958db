"""The `linkd` command: parse arguments, load settings, hand over to the module that does the work.

This module is the entry point (`main`), the command registry (`COMMANDS`, filled by
`@command`) and the helpers the commands share. The commands live in
`commands_server.py` (serve, secret, providers, check, new-provider, purge, demo),
`commands_admin.py` (users, connections, token, disconnect, export) and
`commands_rotate.py` (rotate-keys); importing them at the end of this module registers
them, in the order `linkd --help` lists them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from . import __version__
from .config import Settings, load_settings
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


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


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


# the commands register themselves in COMMANDS on import, in this order
# isort: off
from . import commands_server  # noqa: E402, F401
from . import commands_admin  # noqa: E402, F401
from . import commands_rotate  # noqa: E402, F401

# isort: on

if __name__ == "__main__":  # pragma: no cover
    from linkd.cli import main as registered_main  # run as a script, this module is __main__, not linkd.cli

    sys.exit(registered_main())
