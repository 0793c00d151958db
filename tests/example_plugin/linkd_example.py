"""A third-party linkd plugin: a plain OAuth 2.0 platform with PKCE, in as few lines as linkd needs.

It is installed with pip into the test environment and discovered through the
`linkd` entry-point group, exactly as a real plugin would be. Its fake (`sandbox()`,
whose state is a `FakeOAuth`) is the generic one every `OAuth2Provider` inherits;
its state and token handler are re-exported for the tests that wrap them.
Settings: EXAMPLE_CLIENT_ID, EXAMPLE_CLIENT_SECRET, EXAMPLE_BASE_URL (optional),
EXAMPLE_REDIRECT_URI (optional).
"""

from __future__ import annotations

from collections.abc import Callable

from linkd import Provider, hookimpl
from providers.oauth2 import OAuth2Provider
from providers.oauth2_sandbox import FakeOAuth, TokenHandler

__all__ = ["ExampleProvider", "FakeOAuth", "TokenHandler", "register_providers"]


class ExampleProvider(OAuth2Provider):
    name = "example"
    title = "Example"
    authorize_url = "https://auth.example.com/authorize"
    token_url = "https://auth.example.com/token"
    userinfo_url = "https://auth.example.com/userinfo"  # {"sub": …, "name": …}
    revoke_url = "https://auth.example.com/revoke"
    scopes = ("profile",)
    rotates_refresh_tokens = True


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(ExampleProvider)
