"""The base of the fake Facebook's handlers: recording, forced failures, Graph-style answers.

Every request is recorded and counted before anything else; a failure queued for
the endpoint (500, garbage, HTML, empty, redirect, 190, slow) answers instead of
the endpoint. Graph calls authenticate like Graph: token from `access_token` or
an `Authorization` header, error 190 for unknown, revoked or expired tokens, and
`appsecret_proof` checked (required unless `state.require_proof` is off).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import json
import secrets
import time
from typing import Any

import tornado.web

from .sandbox_state import FacebookSandboxState, Grant


class SandboxHandler(tornado.web.RequestHandler):
    endpoint = ""

    def initialize(self, state: FacebookSandboxState) -> None:
        self.state = state

    def check_xsrf_cookie(self) -> None:  # platforms are called by servers, not by cookie-bearing browsers
        return None

    async def prepare(self) -> None:
        self.state.record(self.endpoint, self.request)
        if self.state.latency:
            await asyncio.sleep(self.state.latency)
        mode = self.state.take_failure(self.endpoint)
        if mode == "slow":
            await asyncio.sleep(self.state.slow_seconds)
        elif mode == "500":
            self.error(500, 2, "An unexpected error has occurred. Please retry your request later.")
        elif mode == "190":
            self.error(400, 190, "Error validating access token: Session has expired.", subcode=463)
        elif mode == "garbage":
            self.set_header("Content-Type", "application/json")
            self.finish(b"\x00\xff{not json")
        elif mode == "html":
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.finish("<!DOCTYPE html><html><body>Sorry, something went wrong.</body></html>")
        elif mode == "empty":
            self.finish()
        elif mode == "redirect":
            self.redirect("https://www.facebook.com/login.php")

    def arg(self, name: str) -> str | None:
        """One argument from the query or a form body; repeated or undecodable → None."""
        values = self.request.arguments.get(name) or []
        if len(values) != 1:
            return None
        try:
            return values[0].decode("utf-8")
        except UnicodeDecodeError:
            return None

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(data))

    def error(
        self, status: int, code: int, message: str, kind: str = "OAuthException", subcode: int = 0
    ) -> None:
        body: dict[str, Any] = {"message": message, "type": kind, "code": code}
        if subcode:
            body["error_subcode"] = subcode
        body["fbtrace_id"] = secrets.token_urlsafe(8)
        self.write_json({"error": body}, status)

    def authenticate(self) -> Grant | None:
        """The grant of the request's token, checked like Graph does; None after answering an error."""
        token = self.arg("access_token")
        header = self.request.headers.get("Authorization", "")
        if token is None and header.split(" ")[0].lower() in ("bearer", "oauth"):
            token = header.partition(" ")[2].strip() or None
        if token is None:
            self.error(
                400, 2500, "An active access token must be used to query information about the current user."
            )
            return None
        grant = self.state.grants.get(token)
        if grant is None or grant.kind == "code":
            self.error(400, 190, "Invalid OAuth access token - Cannot parse access token")
            return None
        if grant.revoked:
            self.error(
                400,
                190,
                "Error validating access token: The user has not authorized application.",
                subcode=458,
            )
            return None
        if grant.expires_at is not None and grant.expires_at < time.time():
            self.error(400, 190, "Error validating access token: Session has expired.", subcode=463)
            return None
        proof = self.arg("appsecret_proof")
        if proof is None and self.state.require_proof:
            self.error(
                400,
                100,
                "API calls from the server require an appsecret_proof argument",
                "GraphMethodException",
            )
            return None
        if proof is not None:
            expected = hmac.new(self.state.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(proof.encode(), expected.encode()):
                self.error(
                    400, 100, "Invalid appsecret_proof provided in the API argument", "GraphMethodException"
                )
                return None
        return grant

    def page_html(self, status: int, title: str, body: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header(
            "Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
        )
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-store")
        self.finish(_PAGE.format(title=html.escape(title), body=body))


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title><style>
body{{margin:0;background:#f0f2f5;font:15px/1.4 Helvetica,Arial,sans-serif;color:#1c1e21}}
header{{background:#1877f2;color:#fff;padding:10px 24px;font:bold 26px Helvetica,Arial,sans-serif}}
main{{max-width:420px;margin:40px auto;background:#fff;border-radius:8px;padding:24px;
box-shadow:0 2px 4px rgba(0,0,0,.1),0 8px 16px rgba(0,0,0,.1)}}
h1{{font-size:20px;margin:0 0 12px}} ul{{padding-left:20px}} .note{{color:#65676b;font-size:13px}}
button{{width:100%;padding:10px;margin-top:10px;border:0;border-radius:6px;font-size:16px;cursor:pointer}}
.go{{background:#1877f2;color:#fff;font-weight:bold}} .no{{background:#e4e6eb;color:#050505}}
</style></head><body><header>facebook</header><main>{body}</main></body></html>"""
