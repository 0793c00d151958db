"""The servers a benchmark run starts: the fake platform, linkd, the peer (two variants), the ceilings.

All listen on 127.0.0.1. linkd runs as `linkd serve` with its settings in an `--env-file`;
the peer runs from its own directory (never copied into the repo) with its own venv,
created outside the repo and reused when present.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path

from procs import Server, free_port, spawn

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
PEER_SETTINGS = (
    "SHOPIFY_API_KEY",
    "SHOPIFY_API_SECRET",
    "SHOPIFY_BASE_URL",
    "FACEBOOK_APP_ID",
    "FACEBOOK_APP_SECRET",
    "FACEBOOK_DIALOG_BASE_URL",
    "FACEBOOK_GRAPH_BASE_URL",
    "FACEBOOK_GRAPH_VERSION",
)


@dataclass
class Kind:
    """One server under test: how to start it and where its readiness and login live."""

    name: str
    label: str
    ready_path: str
    family: str  # linkd | peer | ceiling


LINKD = Kind("linkd", "linkd", "/healthz", "linkd")
PEER_TUTORIAL = Kind("peer_tutorial", "peer (httpx client per call)", "/", "peer")
PEER_SHARED = Kind("peer_shared", "peer (shared httpx client)", "/", "peer")
HELLO = Kind("tornado_hello", "Tornado hello world", "/", "ceiling")
REDIRECT = Kind("tornado_302_hmac", "Tornado 302 + HMAC", "/", "ceiling")


def default_peer_venv() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME")
    return Path(cache) / "linkd-bench" / "peer-venv" if cache else Path("/tmp/linkd-bench-peer-venv")


def ensure_peer_venv(venv: Path, peer_dir: Path) -> Path:
    """A venv with the peer's requirements, outside the repo; reused while requirements.txt is unchanged."""
    requirements = peer_dir / "requirements.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    marker = venv / ".linkd-bench-requirements"
    if marker.exists() and marker.read_text() == digest and (venv / "bin" / "uvicorn").exists():
        return venv
    print(f"creating the peer's venv in {venv} (pip install -r {requirements}) …", flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "-r", str(requirements)], capture_output=True, text=True
    )
    if pip.returncode != 0:
        raise RuntimeError(f"pip install for the peer failed:\n{pip.stdout}{pip.stderr}")
    marker.write_text(digest)
    return venv


def start_fake(workdir: Path, cpu: str | None) -> tuple[Server, dict[str, str]]:
    """The one fake-platform process both linkd and the peer talk to; returns it and its settings."""
    port = free_port()
    log = workdir / "fake.log"
    out = open(workdir / "fake.out", "wb")  # noqa: SIM115 -- read back below, closed at once
    server = spawn(
        "fake",
        [PYTHON, str(BENCH / "fake_provider.py"), "--port", str(port)],
        url=f"http://127.0.0.1:{port}",
        log_path=log,
        cpu=cpu,
        stdout=out,
    )
    out.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = (workdir / "fake.out").read_text()
        if text.startswith("READY "):
            return server, json.loads(text.split(" ", 1)[1])
        if server.proc.poll() is not None:
            raise RuntimeError(f"the fake provider exited; see {log}")
        time.sleep(0.02)
    raise RuntimeError(f"the fake provider did not start; see {log}")


def set_latency(fake: Server, seconds: float) -> None:
    request = urllib.request.Request(f"{fake.url}/_bench/latency?seconds={seconds}", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=5):
        pass


def linkd_command() -> list[str]:
    script = Path(PYTHON).parent / "linkd"
    return [str(script)] if script.exists() else [PYTHON, "-m", "linkd"]


def start_linkd(
    workdir: Path,
    fake_settings: dict[str, str],
    cpu: str | None,
    log_level: str,
    *,
    src: Path | None = None,
    name: str = "linkd",
    extra: dict[str, str] | None = None,
) -> Server:
    """`linkd serve` (from `src`, another checkout, when given) with its settings in an env file."""
    port = free_port()
    data = workdir / "linkd-data"
    (workdir / "providers.d").mkdir(exist_ok=True)
    env_file = workdir / "linkd.env"
    settings = {
        **fake_settings,
        "STATE_TOKEN_SECRET": secrets.token_urlsafe(48),
        "SESSION_DB_PATH": str(data / "sessions.db"),
        "TOKEN_DB_PATH": str(data / "tokens.db"),
        "LINKD_HOST": "127.0.0.1",
        "LINKD_PORT": str(port),
        "LINKD_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "LINKD_PROVIDERS": "shopify,facebook",
        "LINKD_WORKERS": "1",
        "LINKD_LOG_LEVEL": log_level,
        "LINKD_PROVIDERS_DIR": str(workdir / "providers.d"),
        **(extra or {}),
    }
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    env_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LINKD_", "SHOPIFY_", "FACEBOOK_"))}
    env.pop("STATE_TOKEN_SECRET", None)
    command = linkd_command()
    if src is not None:
        env["PYTHONPATH"] = str(src)
        command = [PYTHON, "-m", "linkd"]
    return _start(
        name, [*command, "serve", "--env-file", str(env_file)], port, workdir, cpu, LINKD.ready_path, env
    )


def start_peer(
    workdir: Path,
    fake_settings: dict[str, str],
    cpu: str | None,
    *,
    shared_client: bool,
    peer_dir: Path,
    venv: Path,
) -> Server:
    kind = PEER_SHARED if shared_client else PEER_TUTORIAL
    port = free_port()
    data = workdir / f"{kind.name}-data"
    data.mkdir(exist_ok=True)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LINKD_", "SHOPIFY_", "FACEBOOK_", "SEED_"))
    }
    env.update({k: fake_settings[k] for k in PEER_SETTINGS})
    env.update(
        SEED_VENV=str(venv),
        SESSION_DB_PATH=str(data / "sessions.db"),
        STATE_TOKEN_SECRET=secrets.token_urlsafe(48),
    )
    if shared_client:
        env["SEED_SHARED_HTTP_CLIENT"] = "1"
    return _start(
        kind.name, [str(peer_dir / "run_peer.sh"), str(port)], port, workdir, cpu, kind.ready_path, env
    )


def start_ceiling(workdir: Path, kind: Kind, cpu: str | None) -> Server:
    port = free_port()
    which = "hello" if kind is HELLO else "redirect"
    cmd = [PYTHON, str(BENCH / "ceiling_server.py"), which, "--port", str(port)]
    return _start(kind.name, cmd, port, workdir, cpu, kind.ready_path)


def _start(
    name: str,
    cmd: list[str],
    port: int,
    workdir: Path,
    cpu: str | None,
    ready_path: str,
    env: dict[str, str] | None = None,
) -> Server:
    """A server under test on 127.0.0.1:`port`, logging to `workdir/NAME.log`, once it answers."""
    server = spawn(
        name,
        cmd,
        url=f"http://127.0.0.1:{port}",
        log_path=workdir / f"{name}.log",
        cpu=cpu,
        env=env,
        cwd=workdir,
    )
    server.wait_ready(ready_path)
    return server


# -- a session for the login workload --------------------------------------------------------------
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def _get(url: str, cookie: str | None) -> tuple[int, str | None, list[str]]:
    headers = {"Accept": "application/json"}
    if cookie:
        headers["Cookie"] = cookie
    try:
        with _opener.open(urllib.request.Request(url, headers=headers), timeout=30) as r:
            return r.status, r.headers.get("Location"), r.headers.get_all("Set-Cookie") or []
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location"), exc.headers.get_all("Set-Cookie") or []


def session_cookie(server: Server, shop: str) -> str:
    """Complete one Shopify connect and return the `Cookie` header value of its session."""
    cookie: str | None = None
    url = f"{server.url}/shopify/{shop}/login"
    for _ in range(4):
        status, location, set_cookies = _get(url, cookie if url.startswith(server.url) else None)
        for raw in set_cookies if url.startswith(server.url) else []:
            jar: SimpleCookie = SimpleCookie()
            jar.load(raw)
            if "session_id" in jar and jar["session_id"].value:
                cookie = f"session_id={jar['session_id'].value}"
        if status == 200:
            break
        if status not in (302, 303, 307) or not location:
            raise RuntimeError(f"{server.name}: Shopify connect answered {status} at {url.split('?')[0]}")
        url = urllib.parse.urljoin(server.url, location)
    if not cookie:
        raise RuntimeError(f"{server.name}: no session cookie after a Shopify connect")
    status, location, _ = _get(f"{server.url}/facebook/login", cookie)
    if status not in (302, 307) or not location:
        raise RuntimeError(f"{server.name}: GET /facebook/login with a session answered {status}")
    return cookie
