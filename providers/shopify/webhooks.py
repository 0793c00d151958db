"""Shopify webhooks: `app/uninstalled` and the mandatory compliance topics.

linkd stores, per shop, the connection (tokens, shop name, domain, contact email and
plan). It stores no data about a shop's customers, so `customers/data_request` has
nothing to report and `customers/redact` nothing to erase: both are acknowledged.
`app/uninstalled` and `shop/redact` remove the shop's connection.

Shopify signs the body only (`X-Shopify-Hmac-Sha256`); the topic and shop headers are
not signed. So before removing anything, the signed body must name the same shop in
the field its topic uses (`myshopify_domain` in the Shop resource of `app/uninstalled`,
`shop_domain` in `shop/redact`, whose body has no `customer`): a signed body of
another topic or shop replayed under these headers does not remove a connection.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from linkd import BadRequest, Unauthorized, WebhookActions, WebhookRequest, WebhookResponse

from .shop import normalise_shop
from .signing import verify_body

log = logging.getLogger("linkd.providers.shopify")
TOPIC_PATTERN = re.compile(r"[a-z0-9_]{1,64}/[a-z0-9_]{1,64}")
EVENT_ID_PATTERN = re.compile(r"[\x21-\x7e]{1,200}")
REMOVING_TOPICS = {"app/uninstalled": "myshopify_domain", "shop/redact": "shop_domain"}
ACKNOWLEDGED_TOPICS = frozenset({"customers/data_request", "customers/redact"})


def header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _body_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("The webhook body is not JSON.") from None
    if not isinstance(data, dict):
        raise BadRequest("The webhook body is not a JSON object.")
    return data


def _signed_shop(topic: str, data: dict[str, Any]) -> str | None:
    """The shop the signed body names in the field of its topic, if it has that shape."""
    if "customer" in data or "data_request" in data:
        return None  # a customer request's body: never a reason to remove a shop
    value = data.get(REMOVING_TOPICS[topic])
    if not isinstance(value, str):
        return None
    try:
        return normalise_shop(value)
    except BadRequest:
        return None


async def handle_webhook(
    request: WebhookRequest, actions: WebhookActions, secrets: Sequence[str]
) -> WebhookResponse:
    """Verify, de-duplicate and act on one delivery; see the module docstring for what each topic does."""
    if not verify_body(header(request.headers, "X-Shopify-Hmac-Sha256"), request.body, secrets):
        log.warning("shopify webhook refused: signature missing or wrong")
        raise Unauthorized("The webhook signature did not verify.")
    topic = header(request.headers, "X-Shopify-Topic") or ""
    if not TOPIC_PATTERN.fullmatch(topic):
        raise BadRequest("The webhook has no valid X-Shopify-Topic.")
    shop = normalise_shop(header(request.headers, "X-Shopify-Shop-Domain"))
    if topic in REMOVING_TOPICS and _signed_shop(topic, _body_object(request.body)) != shop:
        log.warning("shopify webhook refused: %s body does not name shop %s", topic, shop)
        raise BadRequest("The webhook body does not match its topic and shop.")

    event_id = header(request.headers, "X-Shopify-Event-Id") or header(
        request.headers, "X-Shopify-Webhook-Id"
    )
    if event_id is not None:
        if not EVENT_ID_PATTERN.fullmatch(event_id):
            raise BadRequest("The webhook's event id is malformed.")
        if not await actions.first_delivery(event_id):
            log.info("shopify webhook %s for %s: duplicate delivery ignored", topic, shop)
            return WebhookResponse(200, {"status": "duplicate"})

    if topic in REMOVING_TOPICS:
        reason = "uninstalled" if topic == "app/uninstalled" else "data_deletion"
        removed = await actions.remove_accounts([shop], reason)
        log.info("shopify webhook %s for %s: removed %d connection(s)", topic, shop, removed)
        return WebhookResponse(200, {"status": "removed"})
    if topic in ACKNOWLEDGED_TOPICS:
        log.info("shopify webhook %s for %s: acknowledged (linkd holds no customer data)", topic, shop)
        return WebhookResponse(200, {"status": "acknowledged"})
    log.info("shopify webhook %s for %s: topic not handled, ignored", topic, shop)
    return WebhookResponse(200, {"status": "ignored"})
