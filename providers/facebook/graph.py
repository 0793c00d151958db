"""Calls to Meta's Graph API, secured the way Meta documents.

Every call made with an access token carries `appsecret_proof` (hex
HMAC-SHA256 of the token keyed with the app secret); the app secret itself is
sent only to the token endpoint (`/{version}/oauth/access_token`). Paging
`next` links are followed only on the configured Graph scheme, host and path
prefix, and only a bounded number of times. Graph's error shape
(`{"error": {"message", "type", "code", "fbtrace_id"}}`) becomes a
`ProviderError` carrying `graph_code`; the message is never logged (it may
echo input), only the code, type and trace id.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import urllib.parse
from typing import Any

from linkd.errors import ProviderError
from linkd.upstream import Upstream, UpstreamResponse

log = logging.getLogger("linkd.providers.facebook")

TOKEN_GONE_CODES = frozenset({190, 102})  # "access token has expired, been revoked or is invalid"
PAGE_LIMIT = 100
MAX_PAGES = 20


def appsecret_proof(access_token: str, app_secret: str) -> str:
    return hmac.new(app_secret.encode("utf-8"), access_token.encode("utf-8"), hashlib.sha256).hexdigest()


def _graph_error(response: UpstreamResponse, where: str) -> ProviderError:
    """A ProviderError from Graph's error body (or a generic one when there is none)."""
    try:
        error = response.json().get("error")
    except (ProviderError, AttributeError):
        error = None
    if not isinstance(error, dict):
        return ProviderError()
    code = error.get("code") if isinstance(error.get("code"), int) else None
    kind = error.get("type") if isinstance(error.get("type"), str) else None
    trace = error.get("fbtrace_id") if isinstance(error.get("fbtrace_id"), str) else None
    log.warning(
        "graph error on %s: status=%s code=%s type=%s fbtrace_id=%s",
        where,
        response.status,
        code,
        kind,
        trace,
    )
    return ProviderError(graph_code=code, graph_type=kind)


class Graph:
    """The Graph API of one app, at one base URL and version."""

    def __init__(self, upstream: Upstream, base_url: str, version: str, app_id: str, app_secret: str) -> None:
        self.upstream = upstream
        self.version = version
        self.app_id = app_id
        self._secret = app_secret
        split = urllib.parse.urlsplit(base_url)
        self._scheme = split.scheme.lower()
        self._netloc = split.netloc.lower()
        self._path = split.path.rstrip("/")
        self.base = urllib.parse.urlunsplit((self._scheme, self._netloc, self._path, "", ""))

    def url(self, path: str) -> str:
        return f"{self.base}/{self.version}/{path.lstrip('/')}"

    async def _call(self, method: str, url: str, params: dict[str, str], where: str) -> Any:
        try:
            response = await self.upstream.request(method, url, params=params, allowed_hosts=[self._netloc])
        except ProviderError as exc:
            upstream_response = exc.data.get("response")
            if isinstance(upstream_response, UpstreamResponse):
                raise _graph_error(upstream_response, where) from None
            raise
        data = response.json()
        if isinstance(data, dict) and "error" in data:
            raise _graph_error(response, where)
        return data

    # the token endpoint: the only place the app secret goes -------------------------
    async def _token(self, params: dict[str, str], where: str) -> tuple[str, int | None]:
        params = {"client_id": self.app_id, "client_secret": self._secret, **params}
        data = await self._call("GET", self.url("oauth/access_token"), params, where)
        token = data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token or len(token) > 4096:
            raise ProviderError()
        expires_in = data.get("expires_in")
        if type(expires_in) is not int or expires_in <= 0:
            expires_in = None
        return token, expires_in

    async def exchange_code(
        self, code: str, redirect_uri: str, code_verifier: str | None
    ) -> tuple[str, int | None]:
        params = {"redirect_uri": redirect_uri, "code": code}
        if code_verifier:
            params["code_verifier"] = code_verifier
        return await self._token(params, "code exchange")

    async def long_lived(self, user_token: str) -> tuple[str, int | None]:
        """Exchange a user token (short- or long-lived) for a fresh long-lived one."""
        return await self._token(
            {"grant_type": "fb_exchange_token", "fb_exchange_token": user_token}, "token exchange"
        )

    # Graph calls made with a token: always with appsecret_proof ----------------------
    def _signed(self, token: str, params: dict[str, str] | None = None) -> dict[str, str]:
        return {
            **(params or {}),
            "access_token": token,
            "appsecret_proof": appsecret_proof(token, self._secret),
        }

    async def get(self, path: str, token: str, params: dict[str, str] | None = None) -> Any:
        return await self._call("GET", self.url(path), self._signed(token, params), f"GET {path}")

    async def delete(self, path: str, token: str) -> Any:
        return await self._call("DELETE", self.url(path), self._signed(token), f"DELETE {path}")

    async def get_all(self, path: str, token: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """Every item of a paged edge, following `paging.next` on the Graph host only.

        A `next` link anywhere else, or more than MAX_PAGES pages, is a ProviderError:
        stopping early would hand the core a partial list, and it would drop the
        connections of the items it did not see.
        """
        items: list[dict[str, Any]] = []
        data = await self.get(path, token, {**params, "limit": str(PAGE_LIMIT)})
        for _ in range(MAX_PAGES):
            if not isinstance(data, dict) or not isinstance(data.get("data"), list):
                raise ProviderError()
            items.extend(item for item in data["data"] if isinstance(item, dict))
            paging = data.get("paging")
            next_url = paging.get("next") if isinstance(paging, dict) else None
            if not next_url:
                return items
            url, query = self._follow(next_url)
            data = await self._call("GET", url, self._signed(token, query), f"GET {path} (next)")
        log.warning("graph paging on %s went past %s pages; refusing a partial list", path, MAX_PAGES)
        raise ProviderError()

    def _follow(self, next_url: Any) -> tuple[str, dict[str, str]]:
        """The URL and query to call for a `next` link, or ProviderError when it leaves Graph."""
        if not isinstance(next_url, str) or len(next_url) > 8192:
            raise ProviderError()
        split = urllib.parse.urlsplit(next_url)
        path_ok = (
            split.path.startswith(f"{self._path}/") and "/../" not in split.path and "\\" not in split.path
        )
        if split.scheme.lower() != self._scheme or split.netloc.lower() != self._netloc or not path_ok:
            log.warning("graph paging link points outside the configured Graph host; not followed")
            raise ProviderError()
        query = {
            k: v
            for k, v in urllib.parse.parse_qsl(split.query, keep_blank_values=True)
            if k not in ("access_token", "appsecret_proof")
        }
        return urllib.parse.urlunsplit((self._scheme, self._netloc, split.path, "", "")), query
