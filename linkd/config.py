"""Settings, read once from the environment, a `.env` file and command-line flags.

This is the only module that reads the environment. A `.env` file is read with
`dotenv_values` and never copied into `os.environ`, so secrets kept there do not
show in `/proc/<pid>/environ` of linkd or of anything it starts. Every problem is
collected and reported at once, one line each, naming the variable and never
echoing a secret's value.
"""

from __future__ import annotations

import math
import os
import urllib.parse
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

from .errors import ConfigError

PLACEHOLDERS = frozenset(
    {
        "changeme-in-prod",
        "changeme",
        "change-me",
        "replace_with_secure_token",
        "replace-with-secure-token",
        "your-secret-here",
        "secret",
        "password",
    }
)
PLACEHOLDER_MARKERS = ("changeme", "change-me", "replace_with", "replace-with", "your-", "your_", "example")
MIN_SECRET_LENGTH = 32
MIN_SECRET_ENTROPY_BITS = 128


def secret_problem(name: str, value: str | None) -> str | None:
    """Why a master secret is unacceptable, naming the variable only."""
    if not value:
        return f"{name} is not set (generate one with `linkd secret`)"
    if is_placeholder(value):
        return f"{name} is a placeholder value; generate a real one with `linkd secret`"
    if len(value) < MIN_SECRET_LENGTH:
        return f"{name} is shorter than {MIN_SECRET_LENGTH} characters"
    if estimated_entropy_bits(value) < MIN_SECRET_ENTROPY_BITS:
        return f"{name} is too predictable (too few distinct characters); use `linkd secret`"
    return None


def is_placeholder(value: str) -> bool:
    lowered = value.strip().lower()
    return lowered in PLACEHOLDERS or any(marker in lowered for marker in PLACEHOLDER_MARKERS)


def estimated_entropy_bits(value: str) -> float:
    """Shannon entropy of the characters times the length of the shortest repeating unit.

    Catches 32×'a', 'ab'×20 and '0123456789'×4 alike; a `linkd secret` value scores ~380 bits.
    """
    value = value[: _period(value)]
    counts = Counter(value)
    total = len(value)
    per_char = -sum(c / total * math.log2(c / total) for c in counts.values())
    return per_char * total


def _period(value: str) -> int:
    for p in range(1, len(value) // 2 + 1):
        if all(value[i] == value[i - p] for i in range(p, len(value))):
            return p
    return len(value)


@dataclass(frozen=True)
class Settings:
    """Every core setting of SPEC.md, validated; `env` holds the raw values for provider settings."""

    secret: str = field(repr=False)
    previous_secrets: tuple[str, ...] = field(default=(), repr=False)
    session_db_path: str = "./data/sessions.db"
    token_db_path: str = "./data/tokens.db"
    host: str = "127.0.0.1"
    port: int = 5000
    public_url: str = "http://localhost:5000"
    providers: tuple[str, ...] | None = None  # None: every discovered provider
    session_ttl: int = 3600
    state_ttl: int = 300
    success_url: str = ""
    api_token: str = field(default="", repr=False)
    workers: int = 1
    upstream_timeout: float = 10.0
    shutdown_timeout: float = 10.0
    log_level: str = "INFO"
    api_host: str = ""
    api_port: int | None = None
    database_url: str = field(default="", repr=False)
    providers_dir: str = "conf/providers.d"
    end_session_after: tuple[str, ...] | None = (
        None  # providers that end the session; None: their own default
    )
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def https(self) -> bool:
        return self.public_url.startswith("https://")

    @property
    def cookie_name(self) -> str:
        return "__Host-session_id" if self.https else "session_id"


# name → (Settings field, parser)
_INT_FIELDS = {
    "LINKD_PORT": ("port", 1, 65535),
    "LINKD_SESSION_TTL": ("session_ttl", 60, 30 * 86400),
    "LINKD_STATE_TTL": ("state_ttl", 30, 3600),
    "LINKD_WORKERS": ("workers", 1, 64),
}
_FLOAT_FIELDS = {
    "LINKD_UPSTREAM_TIMEOUT": ("upstream_timeout", 0.1, 300.0),
    "LINKD_SHUTDOWN_TIMEOUT": ("shutdown_timeout", 0.0, 3600.0),
}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def read_environment(env_file: str | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment merged over a `.env` file (the process environment wins, as with dotenv)."""
    merged: dict[str, str] = {}
    path = Path(env_file) if env_file else Path.cwd() / ".env"
    if env_file and not path.is_file():
        raise ConfigError([f"--env-file {env_file}: no such file"])
    if path.is_file():
        merged.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    return merged


def load_settings(
    env_file: str | None = None,
    overrides: Mapping[str, str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    require_secret: bool = True,
) -> Settings:
    """Read and merge (flags over environment over `.env`), validate; ConfigError lists every problem."""
    env = read_environment(env_file, environ)
    env.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return settings_from_env(env, require_secret=require_secret)


def settings_from_env(env: Mapping[str, str], *, require_secret: bool = True) -> Settings:
    problems: list[str] = []
    values: dict[str, object] = {}

    secret = env.get("STATE_TOKEN_SECRET", "")
    problem = secret_problem("STATE_TOKEN_SECRET", secret)
    if problem and (require_secret or secret):
        problems.append(problem)
    previous = tuple(p.strip() for p in env.get("STATE_TOKEN_SECRET_PREVIOUS", "").split(",") if p.strip())
    for i, value in enumerate(previous):
        if secret_problem("x", value):
            problems.append(f"STATE_TOKEN_SECRET_PREVIOUS entry {i + 1} is not a valid secret")

    for name, (attr, low, high) in _INT_FIELDS.items():
        raw = env.get(name, "").strip()
        if raw:
            try:
                number = int(raw)
                if not low <= number <= high:
                    raise ValueError
                values[attr] = number
            except ValueError:
                problems.append(f"{name} must be a whole number from {low} to {high}")
    for name, (attr, flow, fhigh) in _FLOAT_FIELDS.items():
        raw = env.get(name, "").strip()
        if raw:
            try:
                fnumber = float(raw)
                if not flow <= fnumber <= fhigh:
                    raise ValueError
                values[attr] = fnumber
            except ValueError:
                problems.append(f"{name} must be a number of seconds from {flow:g} to {fhigh:g}")

    for name, attr in (
        ("SESSION_DB_PATH", "session_db_path"),
        ("TOKEN_DB_PATH", "token_db_path"),
        ("LINKD_HOST", "host"),
        ("LINKD_PROVIDERS_DIR", "providers_dir"),
        ("LINKD_API_HOST", "api_host"),
    ):
        if env.get(name, "").strip():
            values[attr] = env[name].strip()

    public = env.get("LINKD_PUBLIC_URL", "").strip().rstrip("/")
    if public:
        parsed = urllib.parse.urlsplit(public)
        if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.query or parsed.fragment:
            problems.append("LINKD_PUBLIC_URL must be an http(s) URL with a host and no query")
        values["public_url"] = public
    elif "port" in values:
        values["public_url"] = f"http://localhost:{values['port']}"

    success = env.get("LINKD_SUCCESS_URL", "").strip()
    if success:
        if urllib.parse.urlsplit(success).scheme not in ("http", "https") and not success.startswith("/"):
            problems.append("LINKD_SUCCESS_URL must be an http(s) URL or a path starting with /")
        values["success_url"] = success

    names = env.get("LINKD_PROVIDERS", "").strip()
    if names:
        values["providers"] = tuple(n.strip() for n in names.split(",") if n.strip())
    ending = env.get("LINKD_END_SESSION_AFTER", "").strip()
    if ending:
        values["end_session_after"] = tuple(
            n.strip() for n in ending.split(",") if n.strip() and n.strip().lower() != "none"
        )

    token = env.get("LINKD_API_TOKEN", "")
    if token:
        if len(token) < 32 or is_placeholder(token):
            problems.append("LINKD_API_TOKEN must be at least 32 characters and not a placeholder")
        values["api_token"] = token

    level = env.get("LINKD_LOG_LEVEL", "").strip().upper()
    if level:
        if level not in _LOG_LEVELS:
            problems.append(f"LINKD_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}")
        values["log_level"] = level

    api_port = env.get("LINKD_API_PORT", "").strip()
    if api_port:
        try:
            values["api_port"] = int(api_port)
            if not 1 <= int(api_port) <= 65535:
                raise ValueError
        except ValueError:
            problems.append("LINKD_API_PORT must be a port number")

    url = env.get("LINKD_DATABASE_URL", "").strip()
    if url:
        if urllib.parse.urlsplit(url).scheme not in ("postgresql", "postgres"):
            problems.append("LINKD_DATABASE_URL must be a postgresql:// URL (or empty for SQLite)")
        values["database_url"] = url

    if problems:
        raise ConfigError(problems)
    return Settings(secret=secret, previous_secrets=previous, env=dict(env), **values)  # type: ignore[arg-type]
