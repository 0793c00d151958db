"""`linkd demo`: the whole service with zero configuration, on sandbox providers.

Every provider that ships a sandbox (a fake of its platform) gets it mounted
under `/_sandbox/{name}` of the same process, and its settings pointed there.
`serve` never does this: only this module mounts sandboxes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import tempfile
import urllib.parse
import webbrowser
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pluggy

from .config import Settings, settings_from_env
from .crypto import random_token
from .logs import setup_logging
from .plugins import get_plugin_manager
from .registry import Registry

log = logging.getLogger("linkd.demo")


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
    base_url: str, data_dir: str, pm: pluggy.PluginManager, extra: Mapping[str, str] | None = None
) -> tuple[Settings, list[Any], dict[str, Any]]:
    """Settings for a linkd whose providers all talk to sandboxes served at `base_url`."""
    port = urllib.parse.urlsplit(base_url).port or 80
    env = {
        "STATE_TOKEN_SECRET": random_token(48),
        "SESSION_DB_PATH": str(Path(data_dir) / "sessions.db"),
        "TOKEN_DB_PATH": str(Path(data_dir) / "tokens.db"),
        "LINKD_HOST": "127.0.0.1",
        "LINKD_PORT": str(port),
        "LINKD_PUBLIC_URL": base_url,
        "LINKD_PROVIDERS_DIR": str(Path(data_dir) / "providers.d"),
        **(extra or {}),
    }
    handlers, sandbox_env, states = mount_sandboxes(base_url, pm, settings_from_env(env))
    return settings_from_env({**sandbox_env, **env}), handlers, states


def _pick_port(preferred: int | None) -> int:
    for candidate in [preferred] if preferred else [5000, 0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                if preferred:
                    raise SystemExit(
                        f"linkd demo: port {preferred} is in use; pick another with --port"
                    ) from None
                continue
            return int(s.getsockname()[1])
    raise SystemExit("linkd demo: no free port")


def run_demo(port: int | None, data_dir: str | None, open_browser: bool, log_level: str = "INFO") -> int:
    from .daemon import run_forever

    setup_logging(log_level)
    port = _pick_port(port)
    temporary = data_dir is None
    directory = data_dir or tempfile.mkdtemp(prefix="linkd-demo-")
    base_url = f"http://127.0.0.1:{port}"
    settings, handlers, _ = sandbox_settings(base_url, directory, get_plugin_manager())
    print(f"linkd demo is running: open {base_url}/ in your browser.", flush=True)
    print(
        "Connect a Shopify store (any name, e.g. 'acme'), approve on the sandbox page, then connect Facebook."
    )
    print("Everything runs on 127.0.0.1 against built-in fake platforms. Press Ctrl-C to stop.", flush=True)
    if open_browser:
        webbrowser.open(base_url + "/")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_forever(settings, handlers))
    if temporary:
        shutil.rmtree(directory, ignore_errors=True)
        print(f"\nlinkd demo stopped; its temporary data in {directory} was removed.")
    else:
        print(f"\nlinkd demo stopped; its data is kept in {directory}.")
    return 0
