"""Settings: read once, every problem reported together, secrets never echoed (SECURITY.md T4)."""

from __future__ import annotations

import pytest

from linkd.config import load_settings, secret_problem, settings_from_env
from linkd.errors import ConfigError

from .conftest import linkd_cli

GOOD = "k3Jr9vXq2LmP8sTzW4nB6yHc1dFgA5eR7uIoQ0wE"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "changeme-in-prod",
        "replace_with_secure_token",
        "short-but-random-Xy7",
        "a" * 32,
        "ab" * 20,
        "0123456789" * 4,
    ],
)
def test_weak_secrets_are_refused(value: str) -> None:
    assert secret_problem("STATE_TOKEN_SECRET", value)


def test_a_generated_secret_is_accepted() -> None:
    assert secret_problem("STATE_TOKEN_SECRET", GOOD) is None


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_env({"STATE_TOKEN_SECRET": "a" * 40, "LINKD_PORT": "99999", "LINKD_LOG_LEVEL": "LOUD"})
    text = "\n".join(info.value.problems)
    assert len(info.value.problems) == 3
    assert "STATE_TOKEN_SECRET" in text and "LINKD_PORT" in text and "LINKD_LOG_LEVEL" in text
    assert "a" * 40 not in text


def test_flags_override_environment_which_overrides_env_file(tmp_path) -> None:
    env_file = tmp_path / "linkd.env"
    env_file.write_text(f"STATE_TOKEN_SECRET={GOOD}\nLINKD_PORT=6000\nLINKD_HOST=127.0.0.2\n")
    settings = load_settings(str(env_file), {"LINKD_PORT": "7000"}, environ={"LINKD_HOST": "127.0.0.3"})
    assert settings.port == 7000 and settings.host == "127.0.0.3" and settings.secret == GOOD


def test_env_file_values_do_not_enter_the_process_environment(tmp_path) -> None:
    import os

    env_file = tmp_path / "linkd.env"
    env_file.write_text(f"STATE_TOKEN_SECRET={GOOD}\n")
    load_settings(str(env_file), environ={})
    assert GOOD not in os.environ.values()


def test_https_public_url_switches_the_cookie_name() -> None:
    settings = settings_from_env({"STATE_TOKEN_SECRET": GOOD, "LINKD_PUBLIC_URL": "https://link.example.com"})
    assert settings.cookie_name == "__Host-session_id" and settings.https


@pytest.mark.parametrize("value", ["", "changeme-in-prod", "a" * 32, "tooshort"])
def test_serve_refuses_a_weak_secret_with_exit_2_without_echoing_it(tmp_path, value: str) -> None:
    result = linkd_cli("serve", "--port", "1", env={"STATE_TOKEN_SECRET": value}, cwd=tmp_path)
    assert result.returncode == 2
    assert "STATE_TOKEN_SECRET" in result.stderr
    if value:
        assert value not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_provider_enabled_by_name_but_unconfigured(tmp_path) -> None:
    result = linkd_cli(
        "serve", env={"STATE_TOKEN_SECRET": GOOD, "LINKD_PROVIDERS": "example,nosuch"}, cwd=tmp_path
    )
    assert result.returncode == 2
    assert "EXAMPLE_CLIENT_ID is not set" in result.stderr and "'nosuch'" in result.stderr


def test_secret_command_prints_a_strong_secret() -> None:
    first, second = linkd_cli("secret").stdout.strip(), linkd_cli("secret").stdout.strip()
    assert first != second and secret_problem("STATE_TOKEN_SECRET", first) is None


def test_check_validates_the_database_and_says_when_it_created_or_upgraded_the_schema(tmp_path) -> None:
    env = {
        "STATE_TOKEN_SECRET": GOOD,
        "SESSION_DB_PATH": str(tmp_path / "data" / "s.db"),
        "TOKEN_DB_PATH": str(tmp_path / "data" / "t.db"),
        "LINKD_PROVIDERS_DIR": str(tmp_path),
    }
    first = linkd_cli("check", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "database ok" in first.stdout and "database was empty: schema version" in first.stderr
    second = linkd_cli("check", env=env, cwd=tmp_path)
    assert second.returncode == 0 and "schema" not in second.stderr
    (tmp_path / "data").chmod(0o755)  # D4: a data dir others can read is refused, naming it
    refused = linkd_cli("check", env=env, cwd=tmp_path)
    assert refused.returncode == 2 and "data directory is accessible by group or others" in refused.stderr
