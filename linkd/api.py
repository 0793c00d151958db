"""The internal API (`/api/v1`) for downstream services: thin handlers over `linkd.admin`.

Every call needs `Authorization: Bearer LINKD_API_TOKEN`, compared in constant time;
nothing here ever reads a cookie, so a browser cannot be tricked into calling it
(and the XSRF check, which is about cookies, does not apply). With no token
configured every route answers 404. Errors are always JSON `{"error", "message"}`.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from .admin import Admin, parse_connection_id
from .crypto import constant_time_equals
from .errors import BadRequest, NotFound, Unauthorized
from .openapi import document
from .web import BaseHandler

PREFIX = "/api/v1"
FALLBACK = PREFIX + r"(?:/.*)?"  # anything else under the prefix: authenticated, then a JSON 404
CONNECTION_FILTERS = ("provider", "status", "account", "after", "limit")


def actor_label(token: str) -> str:
    """Who read a token, for the audit log: a short fingerprint of the API token, never the token."""
    return "api:" + hashlib.sha256(token.encode("utf-8")).hexdigest()[:8]


class ApiHandler(BaseHandler):
    def check_xsrf_cookie(self) -> None:
        """Authenticated by a bearer header only, never by a cookie: there is nothing to forge."""

    def wants_json(self) -> bool:
        return True

    def prepare(self) -> None:
        super().prepare()
        expected = self.services.settings.api_token
        if not expected:
            raise NotFound()
        values = self.request.headers.get_list("Authorization")
        presented = values[0] if len(values) == 1 else ""
        scheme, _, credential = presented.partition(" ")
        if scheme != "Bearer" or not constant_time_equals(credential, expected):
            raise Unauthorized("A valid bearer token is required.", presented=bool(values))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, Unauthorized):
            challenge = 'Bearer realm="linkd"'
            self.set_header(
                "WWW-Authenticate",
                challenge + (', error="invalid_token"' if exc.data.get("presented") else ""),
            )
        super().write_error(status_code, **kwargs)

    @property
    def admin(self) -> Admin:
        return Admin(self.services, actor_label(self.services.settings.api_token))


class OpenAPIHandler(ApiHandler):
    def get(self) -> None:
        self.write_json(document())


class UserHandler(ApiHandler):
    async def get(self, uuid: str) -> None:
        self.write_json(await self.admin.user(uuid))

    async def delete(self, uuid: str) -> None:
        self.write_json((await self.admin.delete_user(uuid)).to_json())


class ConnectionsHandler(ApiHandler):
    async def get(self) -> None:
        args = self.args()
        unknown = sorted(set(args.names()) - set(CONNECTION_FILTERS))
        if unknown:
            raise BadRequest(f"Unknown parameter '{unknown[0]}'; use {', '.join(CONNECTION_FILTERS)}.")
        rows, cursor = await self.admin.connections(
            provider=args.get("provider") or None,
            status=args.get("status") or None,
            account=args.get("account") or None,
            after=_number(args.get("after"), "after", 0),
            limit=_number(args.get("limit"), "limit", 100),
        )
        self.write_json({"connections": rows, "next": cursor})


class ConnectionHandler(ApiHandler):
    async def get(self, id: str) -> None:
        self.write_json(await self.admin.connection(parse_connection_id(id)))

    async def delete(self, id: str) -> None:
        self.write_json((await self.admin.disconnect(parse_connection_id(id))).to_json())


class TokenHandler(ApiHandler):
    async def get(self, id: str) -> None:
        self.write_json(await self.admin.token(parse_connection_id(id)))


class ApiNotFoundHandler(ApiHandler):
    def prepare(self) -> None:
        super().prepare()  # authenticate first: unauthenticated callers learn nothing about the routes
        raise NotFound()


def _number(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if not re.fullmatch(r"[0-9]{1,18}", value):
        raise BadRequest(f"{name} must be a whole number.")
    return int(value)


# OpenAPI path template -> handler; the regex of each route is made from its template.
ROUTES: list[tuple[str, type[ApiHandler]]] = [
    (PREFIX + "/openapi.json", OpenAPIHandler),
    (PREFIX + "/users/{uuid}", UserHandler),
    (PREFIX + "/connections", ConnectionsHandler),
    (PREFIX + "/connections/{id}", ConnectionHandler),
    (PREFIX + "/connections/{id}/token", TokenHandler),
]


def route_pattern(template: str) -> str:
    """`/a/{name}` → `/a/(?P<name>[^/]+)`: Tornado passes each segment as a keyword argument."""
    parts = re.split(r"\{(\w+)\}", template)
    return "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))


def api_routes() -> list[tuple[str, type]]:
    """The `/api/v1` routes for `make_app(..., extra_handlers=...)`; mount only when `api_token` is set."""
    return [(route_pattern(t), h) for t, h in ROUTES] + [(FALLBACK, ApiNotFoundHandler)]


__all__ = ["ROUTES", "actor_label", "api_routes"]
