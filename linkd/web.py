"""The HTTP face of linkd: thin handlers that parse, delegate and respond.

Errors are mapped to responses in one place (`BaseHandler.write_error`); security
headers are set in one place (`BaseHandler.set_default_headers`). The provider
segment of a URL only ever matches a registered, enabled name.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import logging
import os
import re
import secrets
import urllib.parse
from pathlib import Path
from typing import Any

import tornado.web

from .admin import Admin
from .errors import LinkdError, NotFound, StoreBusy, StoreUnavailable, UnknownProvider
from .logs import log_request, request_id
from .provider import Args, WebhookRequest
from .service import CoreWebhookActions, Services

log = logging.getLogger("linkd.web")
TEMPLATES = Path(__file__).parent / "templates"
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
MAX_QUERY_FIELDS = 200
MAX_QUERY_LENGTH = 8192
SEGMENT = r"([^/]{1,64})"
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


class _RequestIds:
    """A per-process random prefix and a counter: request ids only correlate log lines, so they
    need no fresh randomness per request; the prefix is redrawn in each forked worker."""

    pid = 0
    prefix = ""
    counter = itertools.count(1)

    def next(self) -> str:
        if self.pid != os.getpid():
            self.pid, self.prefix, self.counter = os.getpid(), secrets.token_hex(3), itertools.count(1)
        return f"{self.prefix}{next(self.counter):06x}"


next_request_id = _RequestIds().next


CSP = "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'"
ERROR_HEADINGS = {
    "invalid_state": "This sign-in link has expired",
    "access_denied": "Nothing was connected",
    "session_required": "Connect another account first",
    "not_found": "Page not found",
    "unknown_provider": "Unknown platform",
    "account_conflict": "Already linked to another profile",
    "provider_error": "The platform did not answer as expected",
    "invalid_signature": "The platform's signature did not check out",
    "forbidden": "This form has expired",
    "busy": "linkd is busy",
    "store_unavailable": "linkd is unavailable",
    "bad_request": "That did not work",
    "method_not_allowed": "That did not work",
}
NO_RETRY = frozenset({"unknown_provider", "not_found", "account_conflict", "method_not_allowed"})
NOTICES = {"disconnected": "The account was disconnected: linkd no longer holds its tokens."}


def parse_args(query: str) -> Args:
    """Strictly decoded arguments: invalid UTF-8, control characters or too many fields are a 400."""
    from .errors import BadRequest

    if len(query) > MAX_QUERY_LENGTH:
        raise BadRequest("The request's query is too long.")
    try:
        pairs = urllib.parse.parse_qsl(
            query, keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=MAX_QUERY_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("The request's parameters are malformed.") from None
    for key, value in pairs:
        if CONTROL_CHARS.search(key) or CONTROL_CHARS.search(value):
            raise BadRequest("The request's parameters contain control characters.")
    return Args(pairs)


class BaseHandler(tornado.web.RequestHandler):
    @property
    def services(self) -> Services:
        services: Services = self.application.settings["services"]
        return services

    # request plumbing ---------------------------------------------------------------
    def prepare(self) -> None:
        rid = next_request_id()
        request_id.set(rid)
        self.set_header("X-Request-Id", rid)

    def set_default_headers(self) -> None:
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Frame-Options", "DENY")
        if self.services.settings.https:
            self.set_header("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        self.clear_header("Server")

    def wants_json(self) -> bool:
        accept = self.request.headers.get("Accept", "")
        return "application/json" in accept and "text/html" not in accept

    def args(self) -> Args:
        return parse_args(self.request.query)

    def session_cookie(self) -> str | None:
        return self.get_cookie(self.services.settings.cookie_name)

    def set_session_cookie(self, value: str) -> None:
        settings = self.services.settings
        self.set_cookie(
            settings.cookie_name,
            value,
            path="/",
            httponly=True,
            secure=settings.https,
            samesite="Lax",
            max_age=settings.session_ttl,
        )

    def clear_session_cookie(self) -> None:
        settings = self.services.settings
        name = settings.cookie_name
        self.set_cookie(
            name, "", path="/", httponly=True, secure=settings.https, samesite="Lax", expires=EPOCH
        )
        self._new_cookie[name]["max-age"] = "0"  # Tornado drops max_age=0 as falsy

    def render_page(self, template: str, status: int = 200, **kw: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.render(template, settings=self.services.settings, **kw)

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(tornado.escape.json_encode(data))

    # the one place errors become responses -------------------------------------------------
    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, LinkdError):
            level = logging.WARNING if value.status >= 500 else logging.INFO
            log.log(level, "%s %s -> %s %s", self.request.method, self.request.path, value.status, value.code)
        elif isinstance(value, tornado.web.HTTPError):
            log.info("%s %s -> %s", self.request.method, self.request.path, value.status_code)
        else:
            log.error(
                "unhandled %s on %s %s", typ.__name__, self.request.method, self.request.path, exc_info=True
            )

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, LinkdError):
            status_code = exc.status
        super().send_error(status_code, **kwargs)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, LinkdError):
            code, message = exc.code, exc.message
            if isinstance(exc, StoreBusy):
                self.set_header("Retry-After", str(exc.retry_after))
        elif isinstance(exc, tornado.web.HTTPError) and status_code < 500:
            code = {403: "forbidden", 404: "not_found", 405: "method_not_allowed"}.get(
                status_code, "bad_request"
            )
            message = self._reason or "The request was refused."
            if status_code == 403:
                message = "The form expired or came from another site. Please reload the page and try again."
        else:
            status_code, code, message = 500, "internal_error", "Something went wrong on our side."
        self.set_status(status_code)
        self.clear_header("Content-Type")
        if self.wants_json():
            self.finish({"error": code, "message": message})
        else:
            self.render_page(
                "error.html", status=status_code, code=code, message=message, **self.error_page_offers(code)
            )

    # pages ------------------------------------------------------------------------------------
    def flow_provider(self) -> str | None:
        """The provider whose connect flow this request belongs to (login and callback routes)."""
        return None

    def error_page_offers(self, code: str) -> dict[str, Any]:
        """Ways forward from an error page, so a lost cookie or an expired state is never a dead end.

        Generic on purpose: a failed connect offers that provider's own login again, with its
        account hint (e.g. a shop) kept when the failed request carried a valid one; a provider
        that needs a profile first offers the providers that start one.
        """
        page: dict[str, Any] = {"heading": ERROR_HEADINGS.get(code, "Something went wrong"), "offers": []}
        name = self.flow_provider()
        page.update(flow=name is not None, retry=False)
        try:
            registry = self.services.registry
            if code == "session_required":
                page["offers"] = [(e, None) for e in registry.enabled() if e.cls.may_start_user]
            elif name is not None and code not in NO_RETRY:
                entry = registry.entry(name)
                if entry.instance is not None:
                    page.update(offers=[(entry, self._hint_value(entry))], retry=True)
        except Exception:  # an error page must render whatever else is broken
            log.debug("no way forward offered on the error page", exc_info=True)
        return page

    def _hint_value(self, entry: Any) -> str | None:
        """The account hint the failed request named (query or path), if the provider accepts it."""
        hint = entry.cls.account_hint
        if not hint or entry.instance is None:
            return None
        try:
            value = parse_args(self.request.query).get(hint)
        except LinkdError:
            value = None
        path_args = getattr(self, "path_args", None) or []  # unset when Tornado could not decode the URL
        if value is None and len(path_args) > 1:
            value = path_args[1]
        if not value:
            return None
        try:
            entry.instance.login_context(Args([(hint, value)]), None)
        except Exception:
            return None  # never echo something the provider would refuse
        return str(value)

    def starter_titles(self) -> list[str]:
        return [e.cls.display_name() for e in self.services.registry.enabled() if e.cls.may_start_user]

    def provider_title(self, name: str) -> str:
        try:
            return self.services.registry.entry(name).cls.display_name()
        except UnknownProvider:
            return name


class NotFoundHandler(BaseHandler):
    def prepare(self) -> None:
        super().prepare()
        raise NotFound()


class IndexHandler(BaseHandler):
    async def get(self) -> None:
        services = self.services
        session = await services.sessions.resolve(self.session_cookie())
        user_uuid = session.user_uuid if session else None
        accounts = await self._accounts(user_uuid)
        providers = services.registry.enabled()
        if self.wants_json():
            self.xsrf_token  # noqa: B018 - sets the XSRF cookie for JSON clients that will POST
            self.write_json(
                {
                    "status": "ok",
                    "providers": [e.name for e in providers],
                    "user_uuid": user_uuid,
                    "accounts": accounts,
                }
            )
            return
        starters_first = sorted(providers, key=lambda e: not e.cls.may_start_user)
        self.render_page(
            "index.html",
            providers=starters_first,
            user_uuid=user_uuid,
            groups=self._groups(accounts),
            starters=self.starter_titles(),
            notice=NOTICES.get(self.get_query_argument("notice", "")),
        )

    def _groups(self, accounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Top-level accounts, each with its children (a user's Pages) and a way to reconnect it."""
        ids = {a["id"] for a in accounts}
        groups = []
        for account in accounts:
            if account["parent_id"] in ids:
                continue
            entry = None
            if account["status"] != "active":
                with contextlib.suppress(UnknownProvider):
                    entry = self.services.registry.entry(account["provider"])
                entry = entry if entry is not None and entry.instance is not None else None
            groups.append(
                {
                    "account": account,
                    "title": self.provider_title(account["provider"]),
                    "children": [a for a in accounts if a["parent_id"] == account["id"]],
                    "reconnect": entry,
                }
            )
        return groups

    async def _accounts(self, user_uuid: str | None) -> list[dict[str, Any]]:
        """This browser's linked accounts (token-free views), through the same use-case as the API."""
        if not user_uuid:
            return []
        try:
            user: dict[str, Any] = await Admin(self.services, actor="browser").user(user_uuid)
        except NotFound:  # the user was deleted since this session started
            return []
        connections: list[dict[str, Any]] = user["connections"]
        return connections


class LoginHandler(BaseHandler):
    def flow_provider(self) -> str | None:
        args = getattr(self, "path_args", None)  # unset when Tornado could not decode the URL
        return args[0] if args else None

    async def get(self, provider: str, account: str | None = None) -> None:
        start = await self.services.linker.start(provider, self.args(), account, self.session_cookie())
        if start.new_cookie:
            self.set_session_cookie(start.new_cookie)
        self.redirect(start.redirect_url)


class CallbackHandler(BaseHandler):
    def flow_provider(self) -> str | None:
        args = getattr(self, "path_args", None)  # unset when Tornado could not decode the URL
        return args[0] if args else None

    async def get(self, provider: str) -> None:
        done = await self.services.linker.complete(provider, self.args(), self.session_cookie())
        if done.new_cookie:
            self.set_session_cookie(done.new_cookie)
        else:
            self.clear_session_cookie()
        if self.wants_json():
            self.write_json(
                {"user_uuid": done.user_uuid, "provider": done.provider, "accounts": done.accounts}
            )
        elif self.services.settings.success_url:
            self.redirect(self.services.settings.success_url)
        else:
            entry = self.services.registry.entry(provider)
            others = [e for e in self.services.registry.enabled() if e.name != provider]
            self.render_page(
                "done.html",
                done=done,
                title=entry.cls.display_name(),
                starters=self.starter_titles(),
                others=sorted(others, key=lambda e: not e.cls.may_start_user),
            )


class LogoutHandler(BaseHandler):
    async def post(self) -> None:
        session = await self.services.sessions.resolve(self.session_cookie())
        await self.services.sessions.end(session)
        self.clear_session_cookie()
        if self.wants_json():
            self.write_json({"status": "ok"})
        else:
            self.redirect("/")


class DisconnectHandler(BaseHandler):
    """`POST /connections/{id}/disconnect`: a person removes one of their own connections.

    Only a connection of this browser session's user is found (anything else is a 404,
    so ids cannot be probed); revoking at the platform and deleting it with its children
    is the admin use-case, recorded under the actor "browser".
    """

    async def post(self, connection_id: str) -> None:
        row_id = await self._owned(connection_id)
        removal = await Admin(self.services, actor="browser").disconnect(row_id)
        if self.wants_json():
            self.write_json({"status": "ok", "removed": [int(r["id"]) for r in removal.removed]})
        else:
            self.redirect("/?notice=disconnected", status=303)

    async def _owned(self, connection_id: str) -> int:
        from .crypto import USER_INDEX

        session = await self.services.sessions.resolve(self.session_cookie())
        if session is None or session.user_uuid is None or not connection_id.isdigit():
            raise NotFound()
        store = self.services.store
        user = await store.get_user(self.services.keyring.digests(USER_INDEX, session.user_uuid))
        row = await store.get_connection(int(connection_id))
        if user is None or row is None or row.user_id != user.id:
            raise NotFound()
        return row.id


class WebhookHandler(BaseHandler):
    def check_xsrf_cookie(self) -> None:
        """Platforms sign their webhooks; the provider verifies that instead."""

    async def post(self, provider_name: str, kind: str | None = None) -> None:
        provider = self.services.registry.get(provider_name)
        request = WebhookRequest(
            kind=kind,
            headers=dict(self.request.headers.get_all()),
            body=self.request.body,
            args=self.args(),
        )
        actions = CoreWebhookActions(self.services, provider_name)
        try:
            result = await provider.webhook(request, actions)
        except Exception:
            await actions.rollback()
            raise
        self.set_status(result.status)
        if isinstance(result.body, dict):
            self.write_json(result.body, result.status)
        else:
            if result.content_type:
                self.set_header("Content-Type", result.content_type)
            self.finish(result.body or "")


class DeletionStatusHandler(BaseHandler):
    async def get(self, provider: str, code: str) -> None:
        self.services.registry.get(provider)
        if not re.fullmatch(r"[0-9a-f]{20}", code):
            raise NotFound()
        row = await self.services.store.get_deletion(provider, code)
        if row is None:
            raise NotFound()
        body = {"confirmation_code": row.code, "provider": row.provider, "status": row.status}
        if self.wants_json():
            self.write_json(body)
        else:
            self.render_page("deletion.html", deletion=body)


class HealthHandler(BaseHandler):
    async def get(self) -> None:
        if self.application.settings.get("draining"):
            self.write_json({"status": "stopping"}, 503)  # a load balancer stops routing here
            return
        try:
            await self.services.store.ping()
        except (StoreUnavailable, StoreBusy):
            self.write_json({"status": "unavailable"}, 503)
            return
        self.write_json({"status": "ok"})


def provider_routes() -> list[tuple[str, type[BaseHandler]]]:
    return [
        (r"/" + SEGMENT + r"/login", LoginHandler),
        (r"/" + SEGMENT + r"/" + SEGMENT + r"/login", LoginHandler),
        (r"/" + SEGMENT + r"/callback", CallbackHandler),
        (r"/" + SEGMENT + r"/webhook", WebhookHandler),
        (r"/" + SEGMENT + r"/webhook/" + SEGMENT, WebhookHandler),
        (r"/" + SEGMENT + r"/deletion/" + SEGMENT, DeletionStatusHandler),
    ]


def make_app(
    services: Services, extra_handlers: list[Any] | None = None, *, api: bool | None = None
) -> tornado.web.Application:
    """The Tornado application over built services; `extra_handlers` (a sandbox) come first.

    The internal API is mounted here when `LINKD_API_TOKEN` is set and no separate
    `LINKD_API_PORT` asks for its own listener (then `make_api_app` serves it there).
    """
    settings = services.settings
    if api is None:
        api = bool(settings.api_token) and not settings.api_port
    handlers: list[Any] = list(extra_handlers or [])
    if api:
        from .api import api_routes

        handlers += api_routes()
    handlers += [
        (r"/", IndexHandler),
        (r"/healthz", HealthHandler),
        (r"/logout", LogoutHandler),
        (r"/connections/([0-9]{1,18})/disconnect", DisconnectHandler),
    ]
    handlers += provider_routes()
    return _application(services, handlers)


def make_api_app(services: Services) -> tornado.web.Application:
    """Only `/api/v1` and `/healthz`, for a listener of its own (`LINKD_API_HOST`/`LINKD_API_PORT`)."""
    from .api import api_routes

    return _application(services, [(r"/healthz", HealthHandler), *api_routes()])


def _application(services: Services, handlers: list[Any]) -> tornado.web.Application:
    https = services.settings.https
    return tornado.web.Application(
        handlers,
        template_path=str(TEMPLATES),
        static_path=str(Path(__file__).parent / "static"),
        xsrf_cookies=True,
        xsrf_cookie_kwargs={"httponly": True, "samesite": "Strict", "secure": https, "path": "/"},
        default_handler_class=NotFoundHandler,
        services=services,
        log_function=log_request,
        debug=False,
        autoreload=False,
        serve_traceback=False,
        compress_response=False,
    )


__all__ = ["UnknownProvider", "make_api_app", "make_app", "parse_args"]
