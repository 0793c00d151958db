"""The files in conf/: the systemd units pass systemd's own checks, the example env documents everything.

`systemd-analyze verify` exits 0 even on unknown keys, so the gate is its output being
empty; `security --threshold` is in tenths. Both run where systemd-analyze is installed.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from linkd.config import load_settings
from linkd.daemon import KILL_GRACE
from linkd.errors import ConfigError
from linkd.plugins import get_plugin_manager
from linkd.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
SERVICE = CONF / "linkd.service"
SOCKET = CONF / "linkd.socket"
ENV_EXAMPLE = CONF / "linkd.env.example"
MAX_EXPOSURE = 1.2
GOOD_SECRET = secrets.token_urlsafe(48)
ANALYZE = shutil.which("systemd-analyze") or ""
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (apt install systemd)"
)


def directives(path: Path) -> dict[str, list[str]]:
    """Key → every value it is given (systemd units may repeat a key)."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def seconds(value: str) -> float:
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "ms": 0.001}
    match = re.fullmatch(r"([0-9.]+)\s*([a-z]*)", value)
    assert match and match.group(2) in units, value
    return float(match.group(1)) * units[match.group(2)]


def verifiable_copy(tmp_path: Path) -> Path:
    """The units with ExecStart pointing at an executable that exists here (verify checks it)."""
    linkd = Path(sys.executable).parent / "linkd"
    target = linkd if linkd.exists() else Path(sys.executable)
    text = SERVICE.read_text().replace("/opt/linkd/venv/bin/linkd", str(target))
    assert str(target) in text, "ExecStart no longer points at /opt/linkd/venv/bin/linkd"
    (tmp_path / SERVICE.name).write_text(text)
    shutil.copy(SOCKET, tmp_path / SOCKET.name)
    return tmp_path / SERVICE.name


# -- systemd-analyze ---------------------------------------------------------------------------------


@needs_analyze
def test_units_verify_without_a_single_message(tmp_path: Path) -> None:
    service = verifiable_copy(tmp_path)
    result = subprocess.run(
        [ANALYZE, "verify", service.name, SOCKET.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout + result.stderr == "", result.stdout + result.stderr


@needs_analyze
def test_service_exposure_is_at_most_1_2(tmp_path: Path) -> None:
    service = verifiable_copy(tmp_path)
    threshold = str(round(MAX_EXPOSURE * 10))
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", f"--threshold={threshold}", service.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    score = re.search(r"Overall exposure level for linkd\.service: ([0-9.]+)", result.stdout)
    assert score, result.stdout[-2000:] + result.stderr
    print(f"systemd-analyze security exposure: {score.group(1)}")
    assert float(score.group(1)) <= MAX_EXPOSURE and result.returncode == 0, result.stdout[-3000:]


def test_sysusers_line_declares_the_service_user(tmp_path: Path) -> None:
    (line,) = [x for x in (CONF / "linkd.sysusers").read_text().splitlines() if x and not x.startswith("#")]
    assert line.split()[:2] == ["u", "linkd"]
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.skip("systemd-sysusers is not installed")
    result = subprocess.run(
        [sysusers, "--dry-run", f"--root={tmp_path}", str(CONF / "linkd.sysusers")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and "Creating user 'linkd'" in result.stdout + result.stderr, result


# -- what the unit promises --------------------------------------------------------------------------


def test_service_is_a_notify_daemon_that_drains_and_keeps_its_state() -> None:
    unit = directives(SERVICE)
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert seconds(unit["WatchdogSec"][0]) > 0
    assert unit["KillMode"] == ["mixed"] and unit["Restart"] == ["on-failure"]
    assert unit["RestartPreventExitStatus"] == ["2"]
    # the supervisor waits LINKD_SHUTDOWN_TIMEOUT (default 10 s) + KILL_GRACE before SIGKILL
    assert seconds(unit["TimeoutStopSec"][0]) > 10 + KILL_GRACE
    assert unit["StateDirectory"] == ["linkd"] and unit["User"] == ["linkd"]
    environment = dict(v.split("=", 1) for v in unit["Environment"])
    assert environment["SESSION_DB_PATH"].startswith("/var/lib/linkd/")
    assert environment["TOKEN_DB_PATH"].startswith("/var/lib/linkd/")
    (exec_start,) = unit["ExecStart"]
    assert exec_start.startswith("/opt/linkd/venv/bin/linkd serve --env-file ")
    # secrets arrive as a credential file, never as environment variables (SECURITY.md T1)
    assert "EnvironmentFile" not in unit
    assert any(v.startswith("linkd.env:/etc/linkd/") for v in unit["LoadCredential"])
    assert "%d/linkd.env" in exec_start
    assert unit["SystemCallErrorNumber"] == ["EPERM"]  # SQLite's fchown fails softly, is not killed


def test_socket_unit_listens_where_linkd_would() -> None:
    assert directives(SOCKET)["ListenStream"] == ["127.0.0.1:5000"]


# -- the example env file ----------------------------------------------------------------------------


def documented() -> dict[str, str]:
    """NAME → value for every `NAME=value` line of the example, commented out or not."""
    names = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            names[match.group(1)] = match.group(2)
    return names


def test_env_example_documents_every_core_setting() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "linkd").rglob("config.py"))
    names = set(re.findall(r'"((?:LINKD|STATE_TOKEN)_[A-Z_]+|SESSION_DB_PATH|TOKEN_DB_PATH)"', source))
    assert len(names) >= 20, names
    missing = sorted(names - set(documented()))
    assert not missing, f"conf/linkd.env.example does not document {missing}"


def test_env_example_documents_every_builtin_provider_setting_with_its_default() -> None:
    settings = load_settings(str(ENV_EXAMPLE), {"STATE_TOKEN_SECRET": GOOD_SECRET}, environ={})
    registry = Registry.discover(get_plugin_manager(), settings)
    builtin = [e for e in registry.entries.values() if e.distribution == "linkd"]
    assert {e.name for e in builtin} >= {"shopify", "facebook"}
    values = documented()
    for entry in builtin:
        for setting in entry.cls.settings:
            assert setting.name in values, f"conf/linkd.env.example does not document {setting.name}"
            if setting.default:
                assert values[setting.name] == setting.default, (setting.name, setting.default)


def test_env_example_placeholders_are_refused() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(str(ENV_EXAMPLE), environ={})
    assert any("STATE_TOKEN_SECRET" in p for p in refused.value.problems)
    settings = load_settings(str(ENV_EXAMPLE), {"STATE_TOKEN_SECRET": GOOD_SECRET}, environ={})
    problems = " ".join(Registry.discover(get_plugin_manager(), settings).startup_problems(settings))
    for name in ("SHOPIFY_API_KEY", "SHOPIFY_API_SECRET", "FACEBOOK_APP_ID", "FACEBOOK_APP_SECRET"):
        assert name in problems, f"the placeholder of {name} is accepted: {problems}"
