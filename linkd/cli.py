"""The `linkd` command: parse arguments, load settings, hand over to the module that does the work."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__
from .config import Settings, load_settings
from .crypto import random_token
from .errors import ConfigError, LinkdError

EXIT_CONFIG = 2

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

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help_text: str, arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> Any:
    def wrap(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
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


@command("serve", "run the daemon (foreground; systemd-friendly)", lambda p: (server_flags(p), store_flags(p)))
def cmd_serve(args: argparse.Namespace) -> int:
    from .daemon import serve

    return serve(settings_from(args))


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
    rows = [
        {
            "name": e.name,
            "title": e.cls.display_name(),
            "distribution": e.distribution,
            "version": e.version,
            "enabled": e.enabled,
            "missing": e.problems,
        }
        for e in sorted(registry.entries.values(), key=lambda e: e.name)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print_table(
        ["NAME", "FROM", "ENABLED", "PROBLEMS"],
        [
            [r["name"], f"{r['distribution']} {r['version']}", "yes" if r["enabled"] else "no", "; ".join(r["missing"])]
            for r in rows
        ],
    )
    return 0


@command("check", "validate configuration and database access without serving", store_flags)
def cmd_check(args: argparse.Namespace) -> int:
    from .service import build_services

    settings = settings_from(args)

    async def run() -> dict[str, int]:
        services = await build_services(settings)
        try:
            await services.store.ping()
            return await services.store.counts()
        finally:
            await services.close()

    counts = asyncio.run(run())
    print(f"configuration ok; database ok ({', '.join(f'{k}={v}' for k, v in counts.items())})")
    return 0


@command("purge", "delete expired sessions and states now", store_flags)
def cmd_purge(args: argparse.Namespace) -> int:
    import time

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
    print("purged: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def _demo_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default 5000, else a free one)")
    parser.add_argument("--data-dir", help="keep the demo's data here instead of a temporary directory")
    parser.add_argument("--open", action="store_true", help="open the page in a browser")
    parser.add_argument("--log-level", default="INFO", help="log level")


@command("demo", "run linkd with sandbox providers and zero configuration", _demo_flags)
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(port=args.port, data_dir=args.data_dir, open_browser=args.open, log_level=args.log_level)


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
        p.add_argument("--env-file", help="read settings from this file instead of ./.env", default=argparse.SUPPRESS)
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
