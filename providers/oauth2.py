"""Plain OAuth 2.0 platforms: the generic provider, and platforms declared in TOML files.

One class, two ways in:

- code: subclass `OAuth2Provider` and set a few class attributes (its endpoints, scopes,
  where the account id sits in the user info); everything else is inherited;
- data: drop `NAME.toml` into `LINKD_PROVIDERS_DIR`; `register_providers` below builds the
  same subclass from it. Its keys are the class attributes, spelled in TOML.

A definition file that does not validate never stops linkd: it is registered as a
stand-in that is always disabled and whose problems (`file: key '…' what is wrong`) are
what `linkd providers` and `linkd check` show, while every other provider keeps working.
Guide and key reference: docs/plugins.md.
"""

from __future__ import annotations

import base64
import difflib
import json
import logging
import re
import time
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, cast

from linkd import (
    Account,
    Args,
    BadRequest,
    Callback,
    NotFound,
    Provider,
    ProviderError,
    ReconnectRequired,
    Sandbox,
    Setting,
    TokenSet,
    hookimpl,
)
from linkd.config import is_placeholder
from linkd.errors import PluginError
from linkd.provider import NAME_PATTERN, RESERVED_NAMES
from linkd.upstream import UpstreamResponse, base_url_problem

log = logging.getLogger("linkd.providers.oauth2")

CLIENT_AUTH_METHODS = ("client_secret_post", "client_secret_basic")
SAFE_HINT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,253}[A-Za-z0-9])?")  # never '/', '@', ':', '?', '#'
MAX_FILE_BYTES = 64 * 1024
_PRINTABLE = re.compile(r"[\x21-\x7e]+")
ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # an OAuth error code is safe to log; anything else is not


# JSON pointers (RFC 6901) ----------------------------------------------------------------------
def pointer_tokens(pointer: str) -> list[str] | None:
    """The reference tokens of a pointer, or None when it is not a valid RFC 6901 pointer."""
    if pointer == "":
        return []
    if not pointer.startswith("/") or re.search(r"~(?![01])", pointer):
        return None
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def resolve_pointer(document: Any, pointer: str) -> Any:
    """The value `pointer` designates in `document`; KeyError when there is none."""
    tokens = pointer_tokens(pointer)
    if tokens is None:
        raise KeyError(pointer)
    for token in tokens:
        if isinstance(document, dict) and token in document:
            document = document[token]
        elif (
            isinstance(document, list)
            and re.fullmatch(r"0|[1-9][0-9]*", token)
            and int(token) < len(document)
        ):
            document = document[int(token)]
        else:
            raise KeyError(pointer)
    return document


# setting checks ---------------------------------------------------------------------------------
def credential_problem(value: str) -> str | None:
    if is_placeholder(value):
        return "is a placeholder from an example file; set the value from the platform's app settings"
    if not _PRINTABLE.fullmatch(value):
        return "must be printable ASCII without spaces"
    return None


def plain_url_problem(value: str, hint: str | None = None) -> str | None:
    """https (or http on loopback), no credentials, no fragment; the hint placeholder is allowed."""
    sample = value.replace("{" + hint + "}", "hint-example") if hint else value
    if "{" in sample or "}" in sample:
        return "uses a placeholder that is not the account hint"
    parts = urllib.parse.urlsplit(sample)
    if parts.username or parts.password or parts.fragment:
        return "must not carry credentials or a fragment"
    return base_url_problem(sample)


def redirect_uri_problem(value: str) -> str | None:
    if urllib.parse.urlsplit(value).query:
        return "must be the callback URL registered with the platform, without a query"
    return plain_url_problem(value)


def setting_prefix(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


# the provider ---------------------------------------------------------------------------------
class OAuth2Provider(Provider):
    """A plain OAuth 2.0 platform (authorization code grant), configured by class attributes.

    The smallest subclass sets `name`, `authorize_url`, `token_url` and usually
    `userinfo_url`, `scopes` and `account_id_pointer`. Settings default to
    `{NAME}_CLIENT_ID`, `{NAME}_CLIENT_SECRET`, `{NAME}_REDIRECT_URI` (optional) and
    `{NAME}_BASE_URL` (optional: when set, every endpoint keeps its path and query but is
    served from that base, which is how tests, staging and `linkd demo` point it at a fake).
    """

    authorize_url: ClassVar[str] = ""
    token_url: ClassVar[str] = ""
    userinfo_url: ClassVar[str | None] = None  # None: the account is read from the token answer
    revoke_url: ClassVar[str | None] = None  # RFC 7009 revocation endpoint
    scopes: ClassVar[tuple[str, ...]] = ()
    scope_separator: ClassVar[str] = " "
    authorize_params: ClassVar[Mapping[str, str]] = {}
    client_auth: ClassVar[str] = "client_secret_post"  # or "client_secret_basic"
    account_id_pointer: ClassVar[str] = "/sub"  # RFC 6901 pointers into the user info (or token answer)
    account_name_pointer: ClassVar[str | None] = "/name"  # missing or empty: the id
    refresh_enabled: ClassVar[bool] = True
    rotates_refresh_tokens: ClassVar[bool] = False  # each refresh answer must carry a new refresh token
    reconnect_errors: ClassVar[tuple[str, ...]] = ("invalid_grant",)
    hint_pattern: ClassVar[str | None] = None  # what an account hint must fully match (re.fullmatch)
    hint_query: ClassVar[str | None] = None  # query parameter of /{name}/login that may carry the hint
    client_id_setting: ClassVar[str] = ""
    client_secret_setting: ClassVar[str] = ""
    base_url_setting: ClassVar[str] = ""
    definition_file: ClassVar[str | None] = None  # set for providers declared in a TOML file

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Derive the setting names from `name`, unless the subclass names them itself."""
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if not isinstance(name, str):
            return
        prefix = setting_prefix(name)
        for attr, suffix in (
            ("client_id_setting", "CLIENT_ID"),
            ("client_secret_setting", "CLIENT_SECRET"),
            ("base_url_setting", "BASE_URL"),
            ("redirect_uri_setting", "REDIRECT_URI"),
        ):
            if attr not in cls.__dict__:
                setattr(cls, attr, f"{prefix}_{suffix}")
        if "settings" not in cls.__dict__:
            cls.settings = cls.default_settings()

    @classmethod
    def default_settings(cls) -> tuple[Setting, ...]:
        hint = cls.account_hint
        return (
            Setting(cls.client_id_setting, help="The app's client ID.", validate=credential_problem),
            Setting(
                cls.client_secret_setting,
                secret=True,
                help="The app's client secret.",
                validate=credential_problem,
            ),
            Setting(
                cls.redirect_uri_setting or f"{setting_prefix(cls.name)}_REDIRECT_URI",
                default="",
                help=f"Callback URL registered with the platform (default: {{public}}/{cls.name}/callback).",
                validate=redirect_uri_problem,
            ),
            Setting(
                cls.base_url_setting,
                default="",
                help="Serve every endpoint from this base instead (tests, staging, sandbox).",
                validate=lambda value: plain_url_problem(value, hint),
            ),
        )

    @classmethod
    def sandbox(cls, base_url: str) -> Sandbox | None:
        from providers.oauth2_sandbox import make_sandbox

        try:
            return make_sandbox(cls, base_url)
        except ValueError as exc:  # endpoints the generic fake cannot tell apart: no sandbox, not a crash
            log.warning("no sandbox for %s: %s", cls.name, exc)
            return None

    # helpers --------------------------------------------------------------------------------------
    @classmethod
    def valid_hint(cls, value: Any) -> bool:
        """The account hint is safe inside a URL and fully matches the declared pattern."""
        return (
            isinstance(value, str)
            and cls.hint_pattern is not None
            and SAFE_HINT.fullmatch(value) is not None
            and ".." not in value
            and re.fullmatch(cls.hint_pattern, value) is not None
        )

    def endpoint(self, url: str, hint: str | None) -> str:
        """`url` re-rooted at the base URL setting when it is set, with the (validated) hint filled in."""
        base = self.context.settings.get(self.base_url_setting, "")
        if base:
            parts = urllib.parse.urlsplit(url)
            url = base.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
        if self.account_hint:
            if not self.valid_hint(hint):
                raise ProviderError("The account this connection belongs to is not valid.")
            url = url.replace("{" + self.account_hint + "}", cast(str, hint))
        return url

    def _hint_of(self, tokens: TokenSet) -> str | None:
        if not self.account_hint:
            return None
        hint = tokens.extra.get("account_hint")
        if not self.valid_hint(hint):
            raise ReconnectRequired()
        return cast(str, hint)

    async def client_post(self, url: str, form: Mapping[str, str], hint: str | None) -> UpstreamResponse:
        """POST a form to the platform with the client's credentials, as `client_auth` says."""
        body = dict(form)
        headers = {}
        client_id = self.setting(self.client_id_setting)
        secret = self.setting(self.client_secret_setting)
        if self.client_auth == "client_secret_basic":  # RFC 6749 §2.3.1: each part form-urlencoded
            pair = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        else:
            body.update(client_id=client_id, client_secret=secret)
        target = self.endpoint(url, hint)
        host = urllib.parse.urlsplit(target).netloc
        return await self.upstream.request("POST", target, form=body, headers=headers, allowed_hosts=[host])

    async def token_request(
        self, form: Mapping[str, str], hint: str | None, *, refreshing: bool = False
    ) -> dict[str, Any]:
        """The token endpoint's JSON answer; an OAuth error in it (any status) is a ProviderError,
        or ReconnectRequired for a refused refresh (`reconnect_errors`)."""
        try:
            data = (await self.client_post(self.token_url, form, hint)).json()
        except ProviderError as exc:
            response = exc.data.get("response")
            data = _json_or_none(response.body) if response is not None else None
            if refreshing and isinstance(data, dict) and data.get("error") in self.reconnect_errors:
                raise ReconnectRequired() from None
            raise
        if not isinstance(data, dict):
            raise ProviderError("The platform's token answer is not a JSON object.")
        if data.get("error") is not None or data.get("ok") is False:  # some platforms answer errors with 200
            if refreshing and data.get("error") in self.reconnect_errors:
                raise ReconnectRequired()
            code = str(data.get("error"))
            log.warning(
                "%s token endpoint refused: %s", self.name, code if ERROR_CODE.fullmatch(code) else "?"
            )
            raise ProviderError()
        return data

    def token_set(self, data: Mapping[str, Any], hint: str | None) -> TokenSet:
        access = data.get("access_token")
        if not isinstance(access, str) or not access or len(access) > 16384:
            raise ProviderError("The platform's token answer has no access token.")
        refresh = data.get("refresh_token")
        now = time.time()
        scope = data.get("scope")
        if isinstance(scope, str):
            scopes = tuple(s for s in re.split(r"[\s,]+", scope) if s)
        elif isinstance(scope, list):
            scopes = tuple(str(s) for s in scope)
        else:
            scopes = ()
        return TokenSet(
            access_token=access,
            refresh_token=refresh if isinstance(refresh, str) and refresh else None,
            expires_at=_seconds_from(now, data.get("expires_in")),
            refresh_expires_at=_seconds_from(now, data.get("refresh_token_expires_in")),
            scopes=scopes,
            token_type=str(data.get("token_type") or "bearer"),
            extra={"account_hint": hint} if hint else {},
        )

    def account(self, source: Any, tokens: TokenSet, hint: str | None) -> Account:
        try:
            raw_id = resolve_pointer(source, self.account_id_pointer)
        except KeyError:
            raise ProviderError("The platform's answer does not say which account this is.") from None
        if (
            isinstance(raw_id, bool)
            or not isinstance(raw_id, str | int)
            or not str(raw_id)
            or len(str(raw_id)) > 255
        ):
            raise ProviderError("The platform's answer has an invalid account id.")
        account_id = str(raw_id)
        name: Any = None
        if self.account_name_pointer is not None:
            try:
                name = resolve_pointer(source, self.account_name_pointer)
            except KeyError:
                name = None
        display = name.strip()[:200] if isinstance(name, str) and name.strip() else account_id
        if hint:  # ids are only unique per hinted host (tenant, store, workspace)
            return Account(f"{hint}:{account_id}", display, tokens, profile={"account_hint": hint})
        return Account(account_id, display, tokens)

    # the connect flow -----------------------------------------------------------------------------
    def login_context(self, args: Args, account: str | None) -> dict[str, Any]:
        """Without an account hint: no parameters. With one: from the path or `hint_query`, validated."""
        if not self.account_hint:
            if account is not None:
                raise NotFound()
            return {}
        from_query = args.get(self.hint_query) if self.hint_query else None
        given = {v for v in (account, from_query) if v is not None}
        if len(given) > 1:
            raise BadRequest(f"The {self.account_hint} in the address and in the query differ.")
        if not given:
            where = f" or ?{self.hint_query}=…" if self.hint_query else ""
            raise BadRequest(
                f"Which {self.account_hint}? Use /{self.name}/{{{self.account_hint}}}/login{where}."
            )
        hint = given.pop()
        if not self.valid_hint(hint):
            raise BadRequest(f"This {self.account_hint} is not valid.")
        return {"hint": hint}

    def authorization_url(self, *, state: str, context: Mapping[str, Any], code_challenge: str | None) -> str:
        query: dict[str, str] = dict(self.authorize_params)
        query.update(
            response_type="code",
            client_id=self.setting(self.client_id_setting),
            redirect_uri=self.context.redirect_uri,
            state=state,
        )
        if self.scopes:
            query["scope"] = self.scope_separator.join(self.scopes)
        if code_challenge:
            query.update(code_challenge=code_challenge, code_challenge_method="S256")
        url = self.endpoint(self.authorize_url, context.get("hint"))
        return f"{url}{'&' if '?' in url else '?'}{urllib.parse.urlencode(query)}"

    async def complete(self, callback: Callback) -> list[Account]:
        # the hint the flow started with (bound to the state), never anything from the callback
        hint = callback.context.get("hint") if self.account_hint else None
        form = {
            "grant_type": "authorization_code",
            "code": callback.code,
            "redirect_uri": callback.redirect_uri,
        }
        if callback.code_verifier:
            form["code_verifier"] = callback.code_verifier
        data = await self.token_request(form, hint)
        tokens = self.token_set(data, hint)
        source: Any = data
        if self.userinfo_url:
            target = self.endpoint(self.userinfo_url, hint)
            source = await self.upstream.get_json(
                target,
                headers={"Authorization": f"Bearer {tokens.access_token}"},
                allowed_hosts=[urllib.parse.urlsplit(target).netloc],
            )
        return [self.account(source, tokens, hint)]

    # after the connect ----------------------------------------------------------------------------
    def can_refresh(self, tokens: TokenSet) -> bool:
        if not (self.refresh_enabled and tokens.refresh_token):
            return False
        return tokens.refresh_expires_at is None or tokens.refresh_expires_at > time.time()

    async def refresh(self, account_id: str, tokens: TokenSet) -> TokenSet:
        if not (self.refresh_enabled and tokens.refresh_token):
            raise ReconnectRequired()
        hint = self._hint_of(tokens)
        data = await self.token_request(
            {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}, hint, refreshing=True
        )
        fresh = self.token_set(data, hint)
        if self.rotates_refresh_tokens and not fresh.refresh_token:
            raise ProviderError("The platform spent the refresh token without issuing a new one.")
        if not fresh.refresh_token:
            fresh.refresh_token, fresh.refresh_expires_at = tokens.refresh_token, tokens.refresh_expires_at
        fresh.scopes = fresh.scopes or tokens.scopes
        return fresh

    async def revoke(self, account_id: str, tokens: TokenSet) -> None:
        """RFC 7009: revoke the refresh token (the whole grant) or else the access token; best effort."""
        if not self.revoke_url:
            return
        kind = "refresh_token" if tokens.refresh_token else "access_token"
        token = tokens.refresh_token or tokens.access_token
        try:
            await self.client_post(
                self.revoke_url, {"token": token, "token_type_hint": kind}, self._hint_of(tokens)
            )
        except (ProviderError, ReconnectRequired) as exc:
            log.warning("%s revocation failed: %s", self.name, type(exc).__name__)


def _seconds_from(now: float, value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return now + seconds if 0 < seconds < 10 * 365 * 86400 else None


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


# definition files ---------------------------------------------------------------------------------
class BrokenDefinition(Provider):
    """Stands in for a definition file that did not validate: listed, always disabled, with its problems."""

    problems: ClassVar[tuple[str, ...]] = ()
    definition_file: ClassVar[str | None] = None

    @classmethod
    def setting_problems(cls, values: Mapping[str, str]) -> list[str]:
        return list(cls.problems)


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


def read_definition(path: Path) -> tuple[dict[str, Any], list[str]]:
    """(parsed file, problems), each problem prefixed with the file's path."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return {}, [f"{path}: the file is larger than {MAX_FILE_BYTES // 1024} KiB"]
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        return {}, [f"{path}: invalid TOML: {exc}"]
    except UnicodeDecodeError:
        return {}, [f"{path}: the file is not UTF-8 text"]
    except OSError as exc:
        return {}, [f"{path}: the file cannot be read ({exc.strerror})"]
    return data, [f"{path}: {problem}" for problem in definition_problems(data)]


def provider_from_file(path: Path, name: str) -> type[Provider]:
    """An `OAuth2Provider` subclass declared by the file, or a `BrokenDefinition` carrying its problems."""
    data, problems = read_definition(path)
    if problems:
        return broken_definition(name, path, problems)
    attrs: dict[str, Any] = {"name": name, "definition_file": str(path), "__module__": __name__}
    for key, value in data.items():
        attrs[key] = tuple(value) if isinstance(value, list) else value
    attrs.setdefault("title", name.replace("-", " ").replace("_", " ").title())
    attrs["__doc__"] = f"{attrs['title']}, declared in {path}."
    return cast(type[Provider], type(f"Declared_{name}", (OAuth2Provider,), attrs))


def broken_definition(name: str, path: Path, problems: list[str]) -> type[Provider]:
    attrs = {"name": name, "title": name, "problems": tuple(problems), "definition_file": str(path)}
    return cast(
        type[Provider], type(f"Broken_{name}", (BrokenDefinition,), {**attrs, "__module__": __name__})
    )


def _unique(base: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9_-]", "-", base.lower())
    base = (base if base[:1].isalpha() else "x" + base)[:27]
    candidate, n = f"{base}-toml", 2
    while candidate in taken or candidate in RESERVED_NAMES:
        candidate, n = f"{base}-toml{n}", n + 1
    return candidate


def load_definitions(directory: Path) -> list[type[Provider]]:
    """One provider class per `*.toml` file of `directory` (sorted by name); none if it does not exist."""
    if not directory.is_dir():
        return []
    classes: list[type[Provider]] = []
    taken: set[str] = set()
    for path in sorted(p for p in directory.glob("*.toml") if not p.name.startswith(".")):
        stem = path.stem
        if NAME_PATTERN.fullmatch(stem) and stem not in RESERVED_NAMES and stem not in taken:
            cls = provider_from_file(path, stem)
        else:
            rule = "lowercase letters, digits, '-' or '_', starting with a letter, at most 32, not reserved"
            cls = broken_definition(
                _unique(stem, taken), path, [f"{path}: the file name must be a provider name ({rule})"]
            )
        taken.add(cls.name)
        classes.append(cls)
    return classes


def register_all(register: Callable[[type[Provider]], None], classes: list[type[Provider]]) -> None:
    """Register each class; a name a code plugin registered first turns the file into a disabled stand-in.

    The Registry refuses a name twice with PluginError, before recording anything, so the
    refusal tells us a code plugin holds the name. Code wins; the file is reported, not fatal.
    """
    taken = {cls.name for cls in classes}
    for cls in classes:
        try:
            register(cls)
        except PluginError:
            path = Path(getattr(cls, "definition_file", None) or cls.name)
            problem = f"{path}: the name '{cls.name}' is taken by a code plugin; this file is ignored"
            stand_in = broken_definition(_unique(cls.name, taken), path, [problem])
            taken.add(stand_in.name)
            try:
                register(stand_in)
            except PluginError:  # pragma: no cover - _unique picks a free name
                log.warning("%s", problem)


@hookimpl(tryfirst=True)
def register_providers(register: Callable[[type[Provider]], None], settings: Any) -> None:
    """Register one provider per definition file in `settings.providers_dir`.

    `tryfirst` puts this implementation last in `get_hookimpls()`, the order in which the
    Registry calls them: code plugins register first, so a clash surfaces here, not in them.
    """
    directory = Path(settings.providers_dir)
    if not directory.is_dir() and "LINKD_PROVIDERS_DIR" in getattr(settings, "env", {}):
        log.warning("LINKD_PROVIDERS_DIR %s is not a directory; no provider is declared by file", directory)
    register_all(register, load_definitions(directory))
