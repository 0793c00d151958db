"""`linkd new-provider NAME`: write a ready-to-install provider plugin package.

The package is the smallest thing that works: a setup.py declaring the `linkd` entry
point, a module with an `OAuth2Provider` subclass to fill in, and a test that runs it
against linkd's generic fake OAuth 2.0 server (connect, refresh, revoke), so the author
starts from green and sees what breaks as they edit. Nothing existing is overwritten.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path
from string import Template

from .provider import NAME_PATTERN, RESERVED_NAMES

MODULE = Template('''\
"""linkd provider plugin for $title: a plain OAuth 2.0 platform.

Fill in the endpoints and scopes from $title's OAuth 2.0 documentation (and cite it
here); linkd does the rest: state, PKCE, the browser session, sealed tokens, refresh
and revocation. Settings: ${prefix}_CLIENT_ID, ${prefix}_CLIENT_SECRET, and optionally
${prefix}_REDIRECT_URI and ${prefix}_BASE_URL (serve every endpoint from another base,
e.g. a fake). Every class attribute is described in linkd's docs/plugins.md.
"""

from __future__ import annotations

from collections.abc import Callable

from linkd import Provider, hookimpl
from providers.oauth2 import OAuth2Provider


class $cls(OAuth2Provider):
    name = "$name"
    title = "$title"
    # TODO: $title's endpoints (https only), from its documentation
    authorize_url = "https://$host/oauth/authorize"
    token_url = "https://$host/oauth/token"
    userinfo_url = "https://$host/oauth/userinfo"
    revoke_url = "https://$host/oauth/revoke"  # RFC 7009, or None
    scopes = ("profile",)
    account_id_pointer = "/sub"  # RFC 6901 pointer to the account id in the user info
    account_name_pointer = "/name"
    pkce = True  # PKCE S256, if the platform supports it
    client_auth = "client_secret_post"  # or "client_secret_basic"


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register($cls)
''')

TEST = Template('''\
"""$title against a fake OAuth 2.0 server, the way linkd drives it: connect, refresh, revoke.

The fake is linkd's generic one (`$cls.sandbox`), strict like a real server: it checks
the client's credentials, the redirect URI, single-use codes and the PKCE verifier.
"""

from __future__ import annotations

import asyncio
import urllib.parse

import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.netutil
import tornado.web
from linkd import Args, Callback, ProviderContext, ReconnectRequired, Upstream
from linkd.crypto import pkce_pair, random_token
from linkd.plugins import get_plugin_manager
from $module import $cls

REDIRECT_URI = "https://linkd.test/$name/callback"


def test_linkd_finds_the_plugin_through_its_entry_point() -> None:
    assert get_plugin_manager().get_plugin("$name") is not None


def test_connect_refresh_and_revoke_against_a_fake_server() -> None:
    asyncio.run(connect_refresh_and_revoke())


async def connect_refresh_and_revoke() -> None:
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    sandbox = $cls.sandbox(f"http://127.0.0.1:{sock.getsockname()[1]}")
    assert sandbox is not None
    server = tornado.httpserver.HTTPServer(tornado.web.Application(sandbox.handlers))
    server.add_sockets([sock])
    defaults = {s.name: s.default or "" for s in $cls.settings}
    settings = defaults | sandbox.settings
    assert $cls.setting_problems(settings) == []
    upstream = Upstream(timeout=5)
    context = ProviderContext(settings, REDIRECT_URI, "https://linkd.test", upstream)
    provider = $cls(context)
    try:
        # /$name/login: linkd makes the state and the PKCE pair, the provider the URL
        state = random_token()
        verifier, challenge = pkce_pair() if provider.pkce else (None, None)
        bound = provider.login_context(Args([]), None)  # what linkd binds to the state
        url = provider.authorization_url(
            state=state, context=bound, code_challenge=challenge
        )
        # consent: the fake approves at once and sends the browser back with a code
        client = tornado.httpclient.AsyncHTTPClient()
        consent = await client.fetch(url, follow_redirects=False, raise_error=False)
        assert consent.code == 302, consent.body
        back = urllib.parse.urlsplit(consent.headers["Location"])
        assert back._replace(query="").geturl() == REDIRECT_URI
        args = Args(urllib.parse.parse_qsl(back.query))
        code = args.get("code")
        assert args.get("state") == state and code
        # /$name/callback: the provider exchanges the code and names the account
        callback = Callback(args, code, bound, REDIRECT_URI, verifier)
        [account] = await provider.complete(callback)
        assert account.id == sandbox.state.next_subject and account.tokens is not None
        # later: linkd's token manager refreshes before the access token lapses
        assert provider.can_refresh(account.tokens)
        fresh = await provider.refresh(account.id, account.tokens)
        assert fresh.access_token != account.tokens.access_token
        # disconnect: the grant is revoked at the platform, and a refresh then needs a reconnect
        if provider.revoke_url:
            await provider.revoke(account.id, fresh)
            assert sandbox.state.counts.get("revoke") == 1
            with pytest.raises(ReconnectRequired):
                await provider.refresh(account.id, fresh)
    finally:
        upstream.close()
        server.stop()
''')

SETUP = Template("""\
from setuptools import setup

setup(
    name="linkd-$name",
    version="0.1.0",
    description="linkd provider plugin for $title",
    python_requires=">=3.11",
    py_modules=["$module"],
    install_requires=["linkd"],
    entry_points={"linkd": ["$name = $module"]},
)
""")

README = Template("""\
# linkd-$name

A linkd provider plugin for $title.

    pip install ./linkd-$name        # then restart linkd: /$name/login works
    pytest linkd-$name               # runs the plugin against a fake OAuth 2.0 server

Settings: `${prefix}_CLIENT_ID`, `${prefix}_CLIENT_SECRET`; optional `${prefix}_REDIRECT_URI`
(default `{LINKD_PUBLIC_URL}/$name/callback`) and `${prefix}_BASE_URL`.
""")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name", help="the provider's name: lowercase letters, digits, '-' or '_' (URL /NAME/login)"
    )
    parser.add_argument(
        "--dir", help="where to write the package (default: ./linkd-NAME); must not exist or be empty"
    )


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a new provider plugin, or None."""
    if not NAME_PATTERN.fullmatch(name) or name in RESERVED_NAMES:
        return (
            f"{name!r} is not a provider name: use lowercase letters, digits, '-' or '_', "
            "starting with a letter, at most 32 characters, and not a reserved word"
        )
    for entry_point in metadata.entry_points(group="linkd"):
        if entry_point.name == name:
            return f"{name!r} is already the name of an installed linkd plugin ({entry_point.value})"
    return None


def render(name: str) -> dict[str, str]:
    """The package's files, by relative path."""
    words = [w for w in name.replace("-", "_").split("_") if w]
    module = "linkd_" + name.replace("-", "_")
    values = {
        "name": name,
        "module": module,
        "cls": "".join(w.capitalize() for w in words) + "Provider",
        "title": " ".join(w.capitalize() for w in words),
        "prefix": name.upper().replace("-", "_"),
        "host": "auth." + name.replace("_", "-") + ".example",
    }
    return {
        "setup.py": SETUP.substitute(values),
        f"{module}.py": MODULE.substitute(values),
        f"test_{module}.py": TEST.substitute(values),
        "README.md": README.substitute(values),
    }


def run(args: argparse.Namespace) -> int:
    name: str = args.name
    problem = name_problem(name)
    if problem:
        print(f"linkd new-provider: {problem}", file=sys.stderr)
        return 2
    target = Path(args.dir or f"linkd-{name}")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        print(
            f"linkd new-provider: {target} already exists and is not empty; nothing was written",
            file=sys.stderr,
        )
        return 1
    files = render(name)
    target.mkdir(parents=True, exist_ok=True)
    for relative, text in files.items():
        with open(target / relative, "x", encoding="utf-8") as handle:  # "x": never overwrite
            handle.write(text)
    print(f"Wrote the plugin package {target}/: {', '.join(files)}")
    print(f"Next: fill in the endpoints in {target / next(f for f in files if f.startswith('linkd_'))}, then")
    print(f"  pip install {target} && pytest {target}")
    return 0
