"""Reading Shopify's token endpoint answers defensively, and what they become as a `TokenSet`."""

from __future__ import annotations

import logging
import time
from typing import Any

from linkd import ProviderError, ReconnectRequired, TokenSet

from .shop import parse_scopes

log = logging.getLogger("linkd.providers.shopify")
MAX_LIFETIME = 10 * 365 * 24 * 3600  # anything longer is not a lifetime we trust


def _seconds(value: Any) -> int | None:
    """A positive lifetime in seconds from an int or numeric string; None when absent or odd."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and 0 < value <= MAX_LIFETIME:
        return value
    return None


def token_set(data: Any, *, previous: TokenSet | None = None, now: float | None = None) -> TokenSet:
    """A TokenSet from `{"access_token", "scope", "expires_in", "refresh_token", "refresh_token_expires_in"}`.

    A missing access token is a ProviderError. A missing or odd `expires_in` means a
    non-expiring token (Shopify's legacy offline tokens). On a refresh, what the
    answer leaves out (refresh token, its expiry, scopes) is kept from `previous`.
    """
    if not isinstance(data, dict):
        raise ProviderError("Shopify's token answer was not a JSON object.")
    access = data.get("access_token")
    if not isinstance(access, str) or not access or len(access) > 4096:
        raise ProviderError("Shopify did not return an access token.")
    now = time.time() if now is None else now
    expires_in = _seconds(data.get("expires_in"))
    refresh = data.get("refresh_token")
    refresh = refresh if isinstance(refresh, str) and refresh else None
    refresh_in = _seconds(data.get("refresh_token_expires_in"))
    scope = data.get("scope")
    scopes = parse_scopes(scope) if isinstance(scope, str) else ()
    tokens = TokenSet(
        access_token=access,
        refresh_token=refresh,
        expires_at=now + expires_in if expires_in else None,
        refresh_expires_at=now + refresh_in if refresh and refresh_in else None,
        scopes=scopes,
    )
    if previous is not None:
        if tokens.refresh_token is None:
            tokens.refresh_token = previous.refresh_token
            tokens.refresh_expires_at = previous.refresh_expires_at
        if not tokens.scopes:
            tokens.scopes = previous.scopes
    return tokens


def raise_for_refresh_error(exc: ProviderError) -> None:
    """Turn a refused refresh into ReconnectRequired; leave any other failure a ProviderError.

    Shopify answers a dead, spent or revoked refresh token with HTTP 400
    `{"error": "invalid_grant"}`; that grant is gone for good.
    """
    response = exc.data.get("response")
    if response is None or response.status not in (400, 401):
        return
    try:
        body = response.json()
    except ProviderError:
        return
    if isinstance(body, dict) and body.get("error") == "invalid_grant":
        log.info("shopify refresh refused: invalid_grant")
        raise ReconnectRequired() from None
