"""Shopify, built in: a store connected through the app's OAuth install flow.

Registered through the `linkd` entry-point group like any third-party plugin
(`shopify = providers.shopify` in setup.py). The pieces:

- `provider.py`  ShopifyProvider: login, authorize URL, callback checks, code exchange, refresh, uninstall
- `shop.py`      shop-domain normalisation (H1) and scope arithmetic (H5)
- `signing.py`   the `hmac` of redirects (H2, H3, H4) and of webhooks (H6)
- `tokens.py`    reading token answers defensively; `invalid_grant` → reconnect
- `webhooks.py`  `app/uninstalled` and the compliance topics
- `settings.py`  the SHOPIFY_* settings and their checks

The fake Shopify for `linkd demo` and the tests lives in `providers/shopify_sandbox.py`.
"""

from __future__ import annotations

from collections.abc import Callable

from linkd import Provider, hookimpl

from .provider import ShopifyProvider
from .shop import normalise_shop

__all__ = ["ShopifyProvider", "normalise_shop", "register_providers"]


@hookimpl
def register_providers(register: Callable[[type[Provider]], None]) -> None:
    register(ShopifyProvider)
