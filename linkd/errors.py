"""The error types linkd raises, each carrying its HTTP status and a stable code.

Nothing here imports tornado: storage, providers and services raise these, and
`web.py` maps them to responses in one place. A message is always safe to show
to the person in the browser: never put a token, code, state or secret in one.
"""

from __future__ import annotations

from typing import Any


class LinkdError(Exception):
    """Base of every error linkd turns into a clean response."""

    status: int = 500
    code: str = "internal_error"
    message: str = "Something went wrong on our side."

    def __init__(self, message: str | None = None, **data: Any) -> None:
        self.message = message or type(self).message
        self.data = data
        super().__init__(self.message)


class BadRequest(LinkdError):
    status = 400
    code = "bad_request"
    message = "The request is not valid."


class InvalidState(BadRequest):
    """Missing, unknown, expired, replayed or foreign OAuth state."""

    code = "invalid_state"
    message = (
        "This sign-in link is no longer valid (it was used already, expired, "
        "or started in another browser). Please start again."
    )


class InvalidSignature(BadRequest):
    """A platform signature on a redirect did not verify."""

    code = "invalid_signature"
    message = "The request's signature did not verify."


class SessionRequired(BadRequest):
    """The provider cannot start a new user; another one must be connected first."""

    code = "session_required"
    message = "Connect an account that starts your profile first."


class AccessDenied(BadRequest):
    """The person (or the platform) declined the authorization."""

    code = "access_denied"
    message = "The authorization was declined. Nothing was connected."


class Unauthorized(LinkdError):
    status = 401
    code = "unauthorized"
    message = "Authentication is required."


class NotFound(LinkdError):
    status = 404
    code = "not_found"
    message = "Not found."


class UnknownProvider(NotFound):
    code = "unknown_provider"
    message = "No such provider."


class AccountConflict(LinkdError):
    """The account is already linked to another user."""

    status = 409
    code = "account_conflict"
    message = "This account is already linked to another profile."


class ReconnectRequired(LinkdError):
    """The provider refused the stored grant for good; the person must connect again."""

    status = 409
    code = "reconnect_required"
    message = "This connection must be connected again."


class ProviderError(LinkdError):
    """The platform answered with an error, garbage, a redirect, or not in time."""

    status = 502
    code = "provider_error"
    message = "The platform did not answer as expected. Nothing was connected; please try again."


class StoreBusy(LinkdError):
    """The database stayed locked past the wait budget."""

    status = 503
    code = "busy"
    message = "The service is busy. Please retry in a moment."

    def __init__(self, message: str | None = None, retry_after: int = 2, **data: Any) -> None:
        super().__init__(message, **data)
        self.retry_after = retry_after


class StoreUnavailable(LinkdError):
    status = 503
    code = "store_unavailable"
    message = "The service's storage is unavailable."


class SealError(LinkdError):
    """A sealed value did not open: unknown key, tampering, or moved to another row."""

    status = 500
    code = "seal_error"
    message = "Stored data could not be decrypted with the configured secrets."


class ConfigError(LinkdError):
    """Configuration problems, all of them at once, one line each."""

    status = 500
    code = "config_error"

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems) or "invalid configuration")


class PluginError(LinkdError):
    """A plugin is broken: duplicate name, bad declaration."""

    code = "plugin_error"
