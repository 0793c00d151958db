"""The keys a provider definition file (`NAME.toml`) may hold, and what each must be.

`definition_problems` turns a parsed file into `key '…' what is wrong` phrases;
`definitions.py` reads the files and builds the providers.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import Any

from .checks import _PRINTABLE, plain_url_problem
from .client import CLIENT_AUTH_METHODS
from .pointers import pointer_tokens

Check = Callable[[Any, dict[str, Any]], str | None]  # (value, the whole file) → problem


def _string(limit: int) -> Check:
    def check(value: Any, data: dict[str, Any]) -> str | None:
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            return f"must be a non-empty string of at most {limit} characters"
        return None

    return check


def _boolean(value: Any, data: dict[str, Any]) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _url(value: Any, data: dict[str, Any]) -> str | None:
    if not isinstance(value, str) or not value:
        return "must be a URL"
    hint = data.get("account_hint") if isinstance(data.get("account_hint"), str) else None
    for used in re.findall(r"\{([^{}]*)\}", value):
        if hint is None:
            return f"uses {{{used}}}, but the file declares no account_hint"
        if used != hint:
            return f"uses {{{used}}}, which is not the account_hint '{hint}'"
    return plain_url_problem(value, hint)


def _tokens(value: Any, data: dict[str, Any]) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, str) and _PRINTABLE.fullmatch(v) for v in value):
        return "must be a list of strings without spaces"
    return None


def _pointer(value: Any, data: dict[str, Any]) -> str | None:
    if not isinstance(value, str) or not value or pointer_tokens(value) is None:
        return 'must be a JSON pointer (RFC 6901) such as "/id" or "/team/id"'
    return None


def _client_auth(value: Any, data: dict[str, Any]) -> str | None:
    return None if value in CLIENT_AUTH_METHODS else "must be 'client_secret_post' or 'client_secret_basic'"


def _separator(value: Any, data: dict[str, Any]) -> str | None:
    return None if value in (" ", ",", "+") else 'must be " ", "," or "+"'


RESERVED_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "scope",
        "code_challenge",
        "code_challenge_method",
    }
)


def _params(value: Any, data: dict[str, Any]) -> str | None:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        return 'must be a table of string values, e.g. [authorize_params] access_type = "offline"'
    taken = sorted(RESERVED_PARAMS & set(value))
    return f"must not set {', '.join(taken)} (linkd sets it)" if taken else None


def _hint_name(value: Any, data: dict[str, Any]) -> str | None:
    if not isinstance(value, str) or not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", value):
        return 'must be a short lowercase name such as "shop" or "tenant"'
    return None


def _regex(value: Any, data: dict[str, Any]) -> str | None:
    if not isinstance(value, str) or not value:
        return "must be a regular expression"
    try:
        compiled = re.compile(value)
    except re.error as exc:
        return f"is not a valid regular expression ({exc.msg})"
    return "must not accept an empty value" if compiled.fullmatch("") else None


def _query_name(value: Any, data: dict[str, Any]) -> str | None:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,31}", value):
        return "must be a query parameter name"
    if value in RESERVED_PARAMS | {"code", "error", "error_description"}:
        return "must not be a parameter OAuth itself uses"
    return None


def _setting_name(value: Any, data: dict[str, Any]) -> str | None:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Z][A-Z0-9_]{1,63}", value):
        return "must be an environment variable name such as GITHUB_CLIENT_ID"
    if value.startswith(("LINKD_", "STATE_TOKEN_")) or value in ("SESSION_DB_PATH", "TOKEN_DB_PATH"):
        return "must not name one of linkd's own settings"
    return None


KEYS: dict[str, Check] = {
    "title": _string(64),
    "description": _string(300),
    "authorize_url": _url,
    "token_url": _url,
    "userinfo_url": _url,
    "revoke_url": _url,
    "scopes": _tokens,
    "scope_separator": _separator,
    "authorize_params": _params,
    "pkce": _boolean,
    "client_auth": _client_auth,
    "account_id_pointer": _pointer,
    "account_name_pointer": _pointer,
    "may_start_user": _boolean,
    "ends_session": _boolean,
    "refresh_enabled": _boolean,
    "rotates_refresh_tokens": _boolean,
    "reconnect_errors": _tokens,
    "account_hint": _hint_name,
    "hint_pattern": _regex,
    "hint_query": _query_name,
    "client_id_setting": _setting_name,
    "client_secret_setting": _setting_name,
    "redirect_uri_setting": _setting_name,
    "base_url_setting": _setting_name,
}
REQUIRED = ("authorize_url", "token_url")
URL_KEYS = ("authorize_url", "token_url", "userinfo_url", "revoke_url")


def definition_problems(data: dict[str, Any]) -> list[str]:
    """What is wrong with a parsed definition, one `key '…' …` phrase each (empty when valid)."""
    problems = []
    for key in data:
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1)
            extra = " (the provider's name is the file's name)" if key == "name" else ""
            problems.append(f"unknown key '{key}'" + (f" (did you mean '{close[0]}'?)" if close else extra))
    problems += [f"key '{key}' is missing" for key in REQUIRED if key not in data]
    for key, check in KEYS.items():
        if key in data:
            problem = check(data[key], data)
            if problem:
                problems.append(f"key '{key}' {problem}")
    hint = data.get("account_hint")
    if hint is not None and "hint_pattern" not in data:
        problems.append(
            f"key 'hint_pattern' is missing (account_hint '{hint}' needs the pattern its values must match)"
        )
    for key in ("hint_pattern", "hint_query"):
        if key in data and hint is None:
            problems.append(f"key '{key}' is set, but the file declares no account_hint")
    if isinstance(hint, str) and not any("{" + hint + "}" in str(data.get(k, "")) for k in URL_KEYS):
        problems.append(f"key 'account_hint' names {{{hint}}}, which no URL uses")
    names = [data[k] for k in KEYS if k.endswith("_setting") and isinstance(data.get(k), str)]
    if len(set(names)) != len(names):
        problems.append("the *_setting keys must name different settings")
    return problems
