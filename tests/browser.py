"""A small HTTP client with a real cookie jar, for driving OAuth flows from outside.

It never follows a redirect by itself (each hop is a response the test can look
at); `follow` walks the chain the way a browser would, across hosts.
"""

from __future__ import annotations

import http.cookiejar
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Response:
    status: int
    headers: Any
    body: bytes
    url: str
    history: list[Response] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def location(self) -> str:
        return urllib.parse.urljoin(self.url, self.headers.get("Location", ""))

    def cookies(self) -> list[str]:
        return self.headers.get_all("Set-Cookie") or []


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Browser:
    def __init__(self, accept: str = "text/html") -> None:
        self.jar = http.cookiejar.CookieJar()
        self.accept = accept
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect())
        self.log: list[Response] = []  # every response this browser received, in order

    def request(
        self,
        method: str,
        url: str,
        data: bytes | dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        body = urllib.parse.urlencode(data).encode() if isinstance(data, dict) else data
        all_headers = {"Accept": self.accept, **(headers or {})}
        req = urllib.request.Request(url, data=body, method=method, headers=all_headers)
        try:
            with self.opener.open(req, timeout=30) as resp:
                response = Response(resp.status, resp.headers, resp.read(), url)
        except urllib.error.HTTPError as err:
            response = Response(err.code, err.headers, err.read(), url)
        self.log.append(response)
        return response

    def get(self, url: str, **kw: Any) -> Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, data: dict[str, str] | bytes | None = None, **kw: Any) -> Response:
        return self.request("POST", url, data=data or b"", **kw)

    def follow(self, url: str, limit: int = 10, **kw: Any) -> Response:
        """GET and follow redirects like a browser; the final response carries the hops in `history`."""
        history: list[Response] = []
        response = self.get(url, **kw)
        while response.status in (301, 302, 303, 307, 308) and len(history) < limit:
            history.append(response)
            response = self.get(response.location, **kw)
        response.history = history
        return response

    def cookie(self, name: str) -> http.cookiejar.Cookie | None:
        return next((c for c in self.jar if c.name == name), None)

    def xsrf_headers(self) -> dict[str, str]:
        cookie = self.cookie("_xsrf")
        return {"X-XSRFToken": cookie.value or ""} if cookie else {}
