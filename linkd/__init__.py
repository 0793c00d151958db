"""linkd: link a person's accounts on several platforms under one user UUID.

This module is the public plugin API: what a provider plugin imports.
"""

from .errors import (
    AccessDenied,
    AccountConflict,
    BadRequest,
    InvalidSignature,
    InvalidState,
    LinkdError,
    NotFound,
    ProviderError,
    ReconnectRequired,
    SessionRequired,
    Unauthorized,
)
from .hookspecs import hookimpl
from .provider import (
    Account,
    Args,
    Callback,
    Provider,
    ProviderContext,
    Sandbox,
    Setting,
    TokenSet,
    WebhookActions,
    WebhookRequest,
    WebhookResponse,
)
from .upstream import Upstream, UpstreamResponse
from .version import __version__

__all__ = [
    "AccessDenied",
    "Account",
    "AccountConflict",
    "Args",
    "BadRequest",
    "Callback",
    "InvalidSignature",
    "InvalidState",
    "LinkdError",
    "NotFound",
    "Provider",
    "ProviderContext",
    "ProviderError",
    "ReconnectRequired",
    "Sandbox",
    "SessionRequired",
    "Setting",
    "TokenSet",
    "Unauthorized",
    "Upstream",
    "UpstreamResponse",
    "WebhookActions",
    "WebhookRequest",
    "WebhookResponse",
    "__version__",
    "hookimpl",
]
