"""The fake Facebook login dialog: "linkd sandbox app is requesting access to…", Continue / Cancel.

Validates client_id, redirect_uri (absolute http(s), optionally from an allow
list), response_type and the PKCE challenge (S256 only) the way the real dialog
refuses them: an error page, no redirect. Auto-approve (`state.auto_approve` or
`sandbox_auto=1`) skips the page. Everything shown is escaped; the page loads
nothing from elsewhere.
"""

from __future__ import annotations

import html
import re
import secrets
import time
import urllib.parse
from typing import Any

from .sandbox_handler import SandboxHandler
from .sandbox_state import FacebookSandboxState, Grant, with_query

SCOPE_TEXT = {
    "pages_show_list": "Show a list of the Pages you manage",
    "pages_messaging": "Manage and access Page conversations in Messenger",
    "pages_manage_metadata": "Manage accounts, settings and webhooks for a Page",
    "public_profile": "Your name and profile picture",
}


class DialogHandler(SandboxHandler):
    """GET /{version}/dialog/oauth: Facebook's login dialog, asking for permission."""

    endpoint = "dialog"

    def get(self, version: str) -> None:
        client_id, redirect_uri = self.arg("client_id"), self.arg("redirect_uri")
        if client_id != self.state.app_id:
            return self.page_html(
                400, "Error", "<h1>Invalid App ID</h1><p>The provided app ID is invalid.</p>"
            )
        split = urllib.parse.urlsplit(redirect_uri or "")
        allowed = self.state.allowed_redirect_uris
        if (
            split.scheme not in ("http", "https")
            or not split.netloc
            or split.fragment
            or (allowed is not None and redirect_uri not in allowed)
        ):
            return self.page_html(
                400,
                "URL blocked",
                "<h1>URL blocked</h1><p>This redirect failed because the redirect URI is "
                "not whitelisted in the app's Client OAuth Settings.</p>",
            )
        assert redirect_uri is not None
        if (self.arg("response_type") or "code") != "code":
            return self.page_html(400, "Error", "<h1>Unsupported response type</h1>")
        challenge = self.arg("code_challenge")
        if challenge is not None and (
            self.arg("code_challenge_method") != "S256" or not re.fullmatch(r"[A-Za-z0-9_-]{43}", challenge)
        ):
            return self.page_html(
                400, "Error", "<h1>Invalid code challenge</h1><p>Only S256 is accepted.</p>"
            )
        request: dict[str, Any] = {
            "redirect_uri": redirect_uri,
            "state": self.arg("state"),
            "scopes": tuple(s for s in re.split(r"[,\s]+", self.arg("scope") or "") if s),
            "challenge": challenge,
        }
        if self.state.auto_approve or self.arg("sandbox_auto") == "1":
            return self.redirect(_approve(self.state, request))
        request_id = secrets.token_urlsafe(16)
        request["expires_at"] = time.time() + self.state.code_ttl
        self.state.pending[request_id] = request
        scopes = "".join(f"<li>{html.escape(SCOPE_TEXT.get(s, s))}</li>" for s in request["scopes"])
        user = html.escape(self.state.user.name)
        body = (
            "<h1>linkd sandbox app is requesting access to:</h1>"
            f"<ul>{scopes or '<li>Your public profile</li>'}</ul>"
            f"<p class=note>App ID {html.escape(self.state.app_id)} &middot; you will return to "
            f"{html.escape(split.scheme)}://{html.escape(split.netloc)}</p>"
            f'<form method="get" action="decide"><input type="hidden" name="request" value="{request_id}">'
            f'<button class="go" name="choice" value="continue">Continue as {user}</button>'
            '<button class="no" name="choice" value="cancel">Cancel</button></form>'
            "<p class=note>This is linkd's local Facebook sandbox: nothing is sent to Meta.</p>"
        )
        self.page_html(200, "Log in with Facebook", body)


def _approve(state: FacebookSandboxState, request: dict[str, Any]) -> str:
    grant = Grant(
        "code",
        state.user.id,
        time.time() + state.code_ttl,
        scopes=request["scopes"],
        redirect_uri=request["redirect_uri"],
        challenge=request["challenge"],
    )
    params = {"code": state.mint("fbcode-", grant)}
    if request["state"] is not None:
        params["state"] = request["state"]
    return with_query(request["redirect_uri"], params)


class DecideHandler(SandboxHandler):
    """GET /{version}/dialog/decide: the Continue / Cancel buttons of the dialog."""

    endpoint = "decide"

    def get(self, version: str) -> None:
        request = self.state.pending.pop(self.arg("request") or "", None)
        if request is None or request["expires_at"] < time.time():
            return self.page_html(400, "Error", "<h1>This dialog has expired</h1><p>Please start again.</p>")
        if self.arg("choice") == "continue":
            return self.redirect(_approve(self.state, request))
        params = {
            "error": "access_denied",
            "error_code": "200",
            "error_description": "Permissions error",
            "error_reason": "user_denied",
        }
        if request["state"] is not None:
            params["state"] = request["state"]
        self.redirect(with_query(request["redirect_uri"], params))
