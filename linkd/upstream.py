"""Calls from linkd to a platform: one shared keep-alive client, strict by default.

Every call has the configured timeout, never follows a redirect, goes only to
a host the provider allows, caps the answer's size, and turns any network
error, timeout, non-2xx status or non-JSON body into a `ProviderError` whose
message is safe to show (no URL with a code or token in it).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import ssl
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tornado.netutil import DefaultLoopResolver, Resolver

from .errors import ProviderError
from .http_pool import HTTPPool, PoolError

log = logging.getLogger("linkd.upstream")
MAX_BODY = 2 * 1024 * 1024


@dataclass
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProviderError("The platform answered with something that is not JSON.") from exc


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def base_url_problem(url: str) -> str | None:
    """Why `url` may not serve as a provider base URL (https, or http on loopback only)."""
    parsed = urllib.parse.urlsplit(url.replace("{shop}", "shop.example"))
    if parsed.scheme == "https" and parsed.hostname:
        return None
    if parsed.scheme == "http" and is_loopback_host(parsed.hostname):
        return None
    return "must be an https:// URL (http:// is accepted for a loopback host only)"


class CachingResolver(Resolver):
    """getaddrinfo answers kept `ttl` seconds: a provider call then costs no resolver thread hop.

    Tornado's default resolver runs getaddrinfo in a thread for every connection; linkd talks
    to a handful of platform hosts over and over, so their addresses are worth keeping briefly.
    """

    def initialize(self, ttl: float = 30.0) -> None:
        self.inner = DefaultLoopResolver()
        self.ttl = ttl
        self.cache: dict[tuple[str, int, int], tuple[float, list[tuple[int, Any]]]] = {}

    async def resolve(
        self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[tuple[int, Any]]:
        key = (host, port, int(family))
        now = time.monotonic()
        hit = self.cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        result: list[tuple[int, Any]] = await self.inner.resolve(host, port, family)
        if len(self.cache) > 1024:
            self.cache.clear()
        self.cache[key] = (now + self.ttl, result)
        return result


class Upstream:
    """The HTTP client providers use. One per process, shared by every provider.

    Calls go through an `HTTPPool` (keep-alive connections per host), made here in the
    loop that creates the Upstream; `ssl_context` is for tests that trust a test CA (it
    must still verify certificates and host names).
    """

    def __init__(
        self,
        timeout: float,
        *,
        pool: HTTPPool | None = None,
        max_clients: int = 256,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.timeout = timeout
        self.pool = pool or HTTPPool(
            max_connections=max_clients,
            max_body_size=MAX_BODY,
            ssl_context=ssl_context,
            resolver=CachingResolver(),
        )

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        form: Mapping[str, str] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        allowed_hosts: Iterable[str] | None = None,
        ok_statuses: Iterable[int] = (),
    ) -> UpstreamResponse:
        """One call; 2xx (or `ok_statuses`) comes back, anything else raises ProviderError.

        A non-2xx answer raises ProviderError with `.data["response"]` set, so a
        provider can read the platform's error shape (e.g. `invalid_grant`).
        """
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urllib.parse.urlencode(params)}"
        split = urllib.parse.urlsplit(url)
        if allowed_hosts is not None and split.netloc.lower() not in {h.lower() for h in allowed_hosts}:
            raise ProviderError("Refused to call a host this provider does not use.")
        all_headers = {"Accept": "application/json", "User-Agent": "linkd"}
        body: bytes | None = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif json_body is not None:
            body = json.dumps(json_body).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        where = f"{method} {split.scheme}://{split.netloc}{split.path}"  # never the query: it may hold a code
        try:
            response = await self.pool.fetch(
                method, url, headers=all_headers, body=body, timeout=self.timeout
            )
        except PoolError as exc:  # network errors, timeouts, oversized or malformed answers
            log.warning("upstream call failed: %s error=%s", where, exc.reason)
            raise ProviderError() from None
        except Exception as exc:  # e.g. a header value the HTTP layer refuses
            log.warning("upstream call failed: %s error=%s", where, type(exc).__name__)
            raise ProviderError() from None
        result = UpstreamResponse(response.status, dict(response.headers), response.body)
        if not (200 <= response.status < 300 or response.status in set(ok_statuses)):
            log.warning("upstream call answered %s: %s", response.status, where)
            raise ProviderError(response=result)
        return result

    async def get_json(self, url: str, **kw: Any) -> Any:
        return (await self.request("GET", url, **kw)).json()

    async def post_json(self, url: str, **kw: Any) -> Any:
        return (await self.request("POST", url, **kw)).json()

    def close(self) -> None:
        """Close every pooled connection (idle or busy); call it in the loop that used this Upstream."""
        self.pool.close()
