"""`linkd` commands that set up, check and run linkd itself: serve, secret, providers, check,
new-provider, purge, demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from . import scaffold
from .cli import command, json_flag, print_table, server_flags, settings_from, store_flags
from .crypto import random_token


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

    async def run() -> tuple[dict[str, int], list[tuple[str, str]], tuple[int, int]]:
        services = await build_services(settings)
        try:
            await services.store.ping()
            disabled = [
                (e.name, p) for e in services.registry.entries.values() if not e.enabled for p in e.problems
            ]
            return await services.store.counts(), disabled, services.store.schema_change
        finally:
            await services.close()

    counts, disabled, (before, after) = asyncio.run(run())
    if before != after:
        print(
            f"database schema was version {before}, older than this linkd's {after}: migrated now"
            if before
            else f"database was empty: schema version {after} created",
            file=sys.stderr,
        )
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
