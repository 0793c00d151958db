"""`linkd demo`: the whole service with zero configuration, on sandbox providers.

Every provider that ships a sandbox (a fake of its platform) gets it mounted
under `/_sandbox/{name}` of the same process, and its settings pointed there.
`serve` never does this: only this module mounts sandboxes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile
import time
import urllib.parse
import webbrowser
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pluggy
import tornado.netutil

from .config import Settings, settings_from_env
from .crypto import random_token
from .logs import setup_logging
from .plugins import get_plugin_manager
from .registry import Registry

log = logging.getLogger("linkd.demo")
DEFAULT_PORT = 5000
SECRET_FILE = "demo.secret"


def mount_sandboxes(
    base_url: str, pm: pluggy.PluginManager, settings: Settings
) -> tuple[list[Any], dict[str, str], dict[str, Any]]:
    """(Tornado handlers, provider settings, sandbox states) for every provider with a sandbox."""
    handlers: list[Any] = []
    env: dict[str, str] = {}
    states: dict[str, Any] = {}
    for entry in Registry.discover(pm, settings).entries.values():
        if settings.providers is not None and entry.name not in settings.providers:
            continue
        sandbox_base = f"{base_url}/_sandbox/{entry.name}"
        sandbox = entry.cls.sandbox(sandbox_base)
        if sandbox is None:
            continue
        prefix = urllib.parse.urlsplit(sandbox_base).path
        handlers += [(prefix + pattern, handler, kwargs) for pattern, handler, kwargs in sandbox.handlers]
        env.update(sandbox.settings)
        states[entry.name] = sandbox.state
    return handlers, env, states


def sandbox_settings(
    base_url: str,
    data_dir: str,
    pm: pluggy.PluginManager,
    extra: Mapping[str, str] | None = None,
    *,
    sandbox_url: str | None = None,
) -> tuple[Settings, list[Any], dict[str, Any]]:
    """Settings for a linkd at `base_url` whose providers all talk to sandboxes.

    The sandboxes' handlers are meant to be served at `sandbox_url` (default: `base_url`,
    the same server). Another origin there (e.g. `http://localhost:PORT` while linkd is
    `http://127.0.0.1:PORT`) makes the trip to the consent page and back cross-site, as
    with a real platform: that is how the browser test proves the session cookie survives it.
    """
    port = urllib.parse.urlsplit(base_url).port or 80
    declared = Path(data_dir) / "providers.d"  # a TOML file dropped here is a demo provider too
    Path(data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    declared.mkdir(mode=0o700, exist_ok=True)
    env = {
        "STATE_TOKEN_SECRET": random_token(48),
        "SESSION_DB_PATH": str(Path(data_dir) / "sessions.db"),
        "TOKEN_DB_PATH": str(Path(data_dir) / "tokens.db"),
        "LINKD_HOST": "127.0.0.1",
        "LINKD_PORT": str(port),
        "LINKD_PUBLIC_URL": base_url,
        "LINKD_PROVIDERS_DIR": str(declared),
        **(extra or {}),
    }
    handlers, sandbox_env, states = mount_sandboxes(sandbox_url or base_url, pm, settings_from_env(env))
    return settings_from_env({**sandbox_env, **env}), handlers, states


def kept_secret(directory: Path) -> str:
    """The demo's secret for a data dir it keeps, so the next `--data-dir` run can open that data.

    Demo data only: a real deployment's secret never sits beside its databases.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    secret = random_token(48)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def _bind(preferred: int | None) -> list[socket.socket]:
    """Listening sockets on 127.0.0.1: the port asked for, else 5000, else any free one."""
    for candidate in [preferred] if preferred else [DEFAULT_PORT, 0]:
        try:
            return tornado.netutil.bind_sockets(candidate, "127.0.0.1")
        except OSError:
            if preferred:
                raise SystemExit(
                    f"linkd demo: port {preferred} is in use; pick another with --port"
                ) from None
    raise SystemExit("linkd demo: no free port")


def instructions(url: str, settings: Settings, pm: pluggy.PluginManager, data: str) -> str:
    """What the newcomer reads in the terminal: where to go and what to click, from the providers."""
    registry = Registry.discover(pm, settings)
    entries = sorted(
        (e for e in registry.entries.values() if e.enabled), key=lambda e: not e.cls.may_start_user
    )
    lines = [
        "",
        "linkd demo: the whole service on this machine, with sandbox (fake) platforms.",
        "Nothing is sent to any real platform and no account anywhere is needed.",
        "",
        f"  Open {url}/ in your browser.",
        "",
    ]
    for step, entry in enumerate(entries, start=1):
        title = entry.cls.display_name()
        typed = f"type any {entry.cls.account_hint} name (e.g. acme), " if entry.cls.account_hint else ""
        joins = "" if entry.cls.may_start_user else " (it joins the profile started above)"
        lines.append(f"  {step}. {title}: {typed}press Connect {title}, then approve{joins}.")
    lines += [
        "  What was linked is shown on the page you land on after each approval.",
        "",
        f"  Data: {data}",
        "  Press Ctrl-C to stop.",
        "",
    ]
    return "\n".join(lines)


def run_demo(port: int | None, data_dir: str | None, open_browser: bool, log_level: str = "INFO") -> int:
    """Serve linkd and the sandboxes on 127.0.0.1 until Ctrl-C; say where the data was."""
    from .daemon import Worker, protect_secrets

    started = time.monotonic()
    setup_logging(log_level)
    sockets = _bind(port)
    port = int(sockets[0].getsockname()[1])
    temporary = data_dir is None
    directory = data_dir or tempfile.mkdtemp(prefix="linkd-demo-")
    base_url = f"http://127.0.0.1:{port}"
    pm = get_plugin_manager()
    extra = {} if temporary else {"STATE_TOKEN_SECRET": kept_secret(Path(directory))}
    settings, handlers, _ = sandbox_settings(base_url, directory, pm, extra)
    protect_secrets(settings)
    where = (
        f"{directory} (temporary: removed when the demo stops)"
        if temporary
        else f"{directory} (kept, with the demo's secret in {SECRET_FILE})"
    )
    print(instructions(base_url, settings, pm, where), flush=True)
    log.info("demo listening on %s, %.0f ms after start", base_url, 1000 * (time.monotonic() - started))
    if open_browser:
        webbrowser.open(base_url + "/")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(Worker(settings, sockets, handlers).run())
    finally:
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)
            print(f"\nlinkd demo stopped; its temporary data in {directory} was removed.", flush=True)
        else:
            print(f"\nlinkd demo stopped; its data is kept in {directory}.", flush=True)
    return 0
