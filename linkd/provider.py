"""The interface a provider plugin implements, and the values it exchanges with the core.

A provider knows one platform: which settings it needs, how to build its
authorization URL, how to verify its own callback signatures, how to exchange a
code for tokens and fetch the account(s), how to refresh and revoke, and how to
read the platform's webhooks. It never touches the database, cookies or the
response: the core does, from what the provider returns.

The smallest provider for a plain OAuth 2.0 platform subclasses `OAuth2Provider`
(see `providers/oauth2.py`), which is itself a `Provider`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from .errors import BadRequest, NotFound

if TYPE_CHECKING:
    from .upstream import Upstream

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,31}")
RESERVED_NAMES = frozenset({"api", "healthz", "logout", "static", "favicon.ico", "_sandbox", "robots.txt"})


@dataclass(frozen=True)
class Setting:
    """One setting a provider reads (from the environment or `.env`)."""

    name: str
    default: str | None = None  # None: required
    secret: bool = False
    help: str = ""
    validate: Callable[[str], str | None] | None = None  # returns a problem, or None

    @property
    def required(self) -> bool:
        return self.default is None


@dataclass
class TokenSet:
    """What the platform granted. Sealed at rest as a whole; never sent to a browser."""

    access_token: str
    refresh_token: str | None = None
    expires_at: float | None = None  # epoch seconds
    refresh_expires_at: float | None = None
    scopes: tuple[str, ...] = ()
    token_type: str = "bearer"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at": self.expires_at,
            "refresh_expires_at": self.refresh_expires_at,
            "scopes": list(self.scopes),
            "token_type": self.token_type,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TokenSet:
        return cls(
            access_token=data["access_token"],
            refresh_token=data.get("refresh_token"),
            expires_at=data.get("expires_at"),
            refresh_expires_at=data.get("refresh_expires_at"),
            scopes=tuple(data.get("scopes") or ()),
            token_type=data.get("token_type") or "bearer",
            extra=dict(data.get("extra") or {}),
        )


@dataclass
class Account:
    """One account on a platform, as a completed connect found it.

    `children` are sub-accounts with their own tokens (Facebook Pages under a
    Facebook user); each becomes its own connection tied to its parent.
    `profile` holds non-token details worth showing (domain, plan, category);
    it is sealed at rest too because it may carry personal data (an email).
    """

    id: str
    name: str
    tokens: TokenSet | None = None
    kind: str = "account"
    profile: dict[str, Any] = field(default_factory=dict)
    children: list[Account] = field(default_factory=list)


class Args:
    """The raw query (or form) arguments of a request, decoded strictly.

    Repeated parameters are kept, so signature checks see exactly what was sent
    (Tornado's `get_argument` keeps only the last one and rewrites control characters).
    """

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self.pairs = list(pairs)
        self._multi: dict[str, list[str]] = {}
        for key, value in self.pairs:
            self._multi.setdefault(key, []).append(value)

    def get(self, name: str) -> str | None:
        """The single value of `name`, None when absent; a repeated parameter is a 400."""
        values = self._multi.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise BadRequest(f"The parameter '{name}' is repeated.")
        return values[0]

    def getall(self, name: str) -> list[str]:
        return list(self._multi.get(name, ()))

    def names(self) -> list[str]:
        return list(self._multi)

    def __contains__(self, name: object) -> bool:
        return name in self._multi


@dataclass
class Callback:
    """What the core hands a provider to finish a connect, once the state checked out."""

    args: Args
    code: str
    context: dict[str, Any]  # what `login_context` returned when the flow started
    redirect_uri: str
    code_verifier: str | None


@dataclass
class WebhookRequest:
    kind: str | None  # the path's last segment: /{provider}/webhook/{kind}
    headers: Mapping[str, str]
    body: bytes
    args: Args


@dataclass
class WebhookResponse:
    status: int = 200
    body: Any = None  # dict → JSON, str → text, None → empty
    content_type: str | None = None


class WebhookActions(Protocol):
    """What a provider's webhook handler may do to stored data, through the core."""

    async def first_delivery(self, event_id: str) -> bool:
        """True the first time this platform event id is seen (de-duplicates retries)."""
        ...

    async def remove_accounts(self, account_ids: Sequence[str], reason: str = "uninstalled") -> int:
        """Delete these accounts of this provider (and their children); returns how many rows went.

        `reason` is passed to the `connection_removed` event ("uninstalled", "deauthorized",
        "data_deletion", …).
        """
        ...

    async def create_deletion_request(self, account_ids: Sequence[str]) -> tuple[str, str]:
        """Delete the accounts and record the request; returns (confirmation code, status URL)."""
        ...


@dataclass
class Sandbox:
    """A fake of the platform, served by `linkd demo` and the tests under a base URL.

    `handlers` are Tornado (pattern, handler class, kwargs) triples relative to the
    base URL; `settings` point the provider at the fake (base URLs, client id and
    secret the fake accepts); `state` is the fake's own object (counters, controls)
    that tests inspect.
    """

    handlers: list[tuple[str, Any, dict[str, Any]]]
    settings: dict[str, str]
    state: Any = None


@dataclass
class ProviderContext:
    """What the core gives each provider instance: its settings and its tools."""

    settings: Mapping[str, str]  # this provider's settings, defaults applied
    redirect_uri: str
    public_url: str
    upstream: Upstream


class Provider:
    """Base class of every provider plugin, built-in or third-party.

    Class attributes declare the provider; instances are made by the core with a
    `ProviderContext` once settings are validated. Override the methods your
    platform needs; the defaults fit a plain OAuth 2.0 platform.
    """

    name: ClassVar[str]
    title: ClassVar[str] = ""
    settings: ClassVar[tuple[Setting, ...]] = ()
    redirect_uri_setting: ClassVar[str | None] = None  # e.g. "SHOPIFY_REDIRECT_URI"
    may_start_user: ClassVar[bool] = True
    ends_session: ClassVar[bool] = False
    pkce: ClassVar[bool] = True
    account_hint: ClassVar[str | None] = None  # label of {account} in /{name}/{account}/login
    description: ClassVar[str] = ""

    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        self.upstream = context.upstream

    # declaration ------------------------------------------------------------------
    @classmethod
    def sandbox(cls, base_url: str) -> Sandbox | None:
        """A fake of this platform for `linkd demo` and tests, served at `base_url`; None if none."""
        return None

    @classmethod
    def display_name(cls) -> str:
        return cls.title or cls.name.capitalize()

    @classmethod
    def setting_problems(cls, values: Mapping[str, str]) -> list[str]:
        """One line per missing or invalid setting; empty when the provider can run."""
        problems = []
        for setting in cls.settings:
            value = values.get(setting.name)
            if value is None or value == "":
                if setting.required:
                    problems.append(f"{setting.name} is not set")
                continue
            if setting.validate is not None:
                problem = setting.validate(value)
                if problem:
                    problems.append(f"{setting.name} {problem}")
        return problems

    def setting(self, name: str) -> str:
        return self.context.settings[name]

    # the connect flow ---------------------------------------------------------------
    def login_context(self, args: Args, account: str | None) -> dict[str, Any]:
        """Validate this provider's own login parameters; return what to bind to the state.

        `account` is the hint from `/{name}/{account}/login`. Raise BadRequest on bad
        input, before anything is stored or sent. The default takes no parameters.
        """
        if account is not None:
            raise NotFound()
        return {}

    def authorization_url(self, *, state: str, context: Mapping[str, Any], code_challenge: str | None) -> str:
        """The platform URL the browser is sent to."""
        raise NotImplementedError

    def verify_callback(self, args: Args) -> None:
        """Check the platform's own signature on the callback, before anything else is used."""

    def check_callback(self, args: Args, context: Mapping[str, Any]) -> None:
        """Check the callback against what the flow started with (after the state checked out)."""

    async def complete(self, callback: Callback) -> list[Account]:
        """Exchange the code and fetch the account(s). Raise ProviderError on upstream trouble."""
        raise NotImplementedError

    # after the connect ------------------------------------------------------------------
    def can_refresh(self, tokens: TokenSet) -> bool:
        return bool(tokens.refresh_token)

    async def refresh(self, account_id: str, tokens: TokenSet) -> TokenSet:
        """New tokens from the refresh token. Raise ReconnectRequired when the grant is gone."""
        raise NotImplementedError

    async def revoke(self, account_id: str, tokens: TokenSet) -> None:
        """Revoke the grant at the platform; raise ProviderError when the platform did not take it.

        The core deletes locally whatever happens, and reports a failed revocation to the
        operator (`revoke_failed`), so do not swallow failures here. A grant that is already
        gone counts as revoked.
        """

    async def webhook(self, request: WebhookRequest, actions: WebhookActions) -> WebhookResponse:
        """Handle a platform-to-linkd notification. Verify its signature first."""
        raise NotFound()
