"""The OpenAPI 3.1 description of `/api/v1`, served at `/api/v1/openapi.json`.

Kept true by `tests/test_api.py`: every route of `linkd.api.api_routes()` is a
path here and the reverse, and the responses of real calls validate against
these schemas.
"""

from __future__ import annotations

import copy
from typing import Any

from .version import __version__

JSON = "application/json"
NULLABLE_NUMBER = {"type": ["number", "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _response(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref(schema)}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Malformed id or query parameter.",
        401: "Missing or wrong bearer token (see `WWW-Authenticate`).",
        404: "No such user or connection.",
        409: "The connection must be connected again (its grant was refused).",
        502: "The platform did not answer the refresh as expected.",
        503: "The store is busy (see `Retry-After`).",
    }
    return {str(s): _response(reasons[s], "Error") for s in (401, *statuses)}


def _path_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


UUID_PARAM = _path_param("uuid", {"type": "string", "format": "uuid"}, "The user's UUID.")
ID_PARAM = _path_param("id", {"type": "integer", "minimum": 0}, "The connection id.")

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "additionalProperties": False,
        "properties": {
            "error": {"type": "string", "description": "A stable code, e.g. `not_found`."},
            "message": {"type": "string", "description": "Safe to show to a person."},
        },
    },
    "Connection": {
        "type": "object",
        "description": "A linked account, without its tokens.",
        "required": [
            "id",
            "user_uuid",
            "provider",
            "account_id",
            "name",
            "kind",
            "parent_id",
            "status",
            "scopes",
            "expires_at",
        ],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "integer"},
            "user_uuid": {"type": "string", "format": "uuid"},
            "provider": {"type": "string"},
            "account_id": {"type": "string"},
            "name": {"type": "string"},
            "kind": {"type": "string"},
            "parent_id": {"type": ["integer", "null"], "description": "The connection this one came with."},
            "status": {"type": "string", "enum": ["active", "reconnect"]},
            "scopes": {"type": "array", "items": {"type": "string"}},
            "expires_at": {**NULLABLE_NUMBER, "description": "When the access token lapses (epoch seconds)."},
        },
    },
    "User": {
        "type": "object",
        "required": ["uuid", "created_at", "connections"],
        "additionalProperties": False,
        "properties": {
            "uuid": {"type": "string", "format": "uuid"},
            "created_at": {"type": "number"},
            "connections": {"type": "array", "items": _ref("Connection")},
        },
    },
    "ConnectionPage": {
        "type": "object",
        "required": ["connections", "next"],
        "additionalProperties": False,
        "properties": {
            "connections": {"type": "array", "items": _ref("Connection")},
            "next": {
                "type": ["integer", "null"],
                "description": "Pass as `after` for the next page; null on the last page.",
            },
        },
    },
    "Token": {
        "type": "object",
        "required": [
            "connection_id",
            "provider",
            "account_id",
            "access_token",
            "token_type",
            "expires_at",
            "scopes",
        ],
        "additionalProperties": False,
        "properties": {
            "connection_id": {"type": "integer"},
            "provider": {"type": "string"},
            "account_id": {"type": "string"},
            "access_token": {"type": "string"},
            "token_type": {"type": "string"},
            "expires_at": {**NULLABLE_NUMBER, "description": "Epoch seconds; null when it does not expire."},
            "scopes": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Removal": {
        "type": "object",
        "required": ["removed", "revoked", "revoke_failed"],
        "additionalProperties": False,
        "properties": {
            "removed": {"type": "array", "items": _ref("Connection")},
            "revoked": {
                "type": "array",
                "items": {"type": "integer"},
                "description": "Revoked at the platform.",
            },
            "revoke_failed": {
                "type": "array",
                "items": {"type": "integer"},
                "description": "The platform refused or did not answer; deleted locally all the same.",
            },
        },
    },
}

PATHS: dict[str, Any] = {
    "/api/v1/openapi.json": {
        "get": {
            "operationId": "getOpenAPI",
            "summary": "This document.",
            "responses": {
                "200": {"description": "OpenAPI 3.1", "content": {JSON: {"schema": {"type": "object"}}}},
                **_errors(),
            },
        }
    },
    "/api/v1/users/{uuid}": {
        "parameters": [UUID_PARAM],
        "get": {
            "operationId": "getUser",
            "summary": "A user and their connections (no tokens).",
            "responses": {"200": _response("The user.", "User"), **_errors(400, 404)},
        },
        "delete": {
            "operationId": "deleteUser",
            "summary": "Revoke every connection at its platform (best effort), then delete the user locally.",
            "responses": {"200": _response("What was removed.", "Removal"), **_errors(400, 404, 503)},
        },
    },
    "/api/v1/connections": {
        "get": {
            "operationId": "listConnections",
            "summary": "Connections in id order, filtered, one page at a time.",
            "parameters": [
                _query("provider", {"type": "string"}, "Only this provider."),
                _query("status", {"type": "string", "enum": ["active", "reconnect"]}, "Only this status."),
                _query("account", {"type": "string"}, "Only this account id."),
                _query("after", {"type": "integer", "minimum": 0}, "The `next` cursor of the previous page."),
                _query(
                    "limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 100}, "Page size."
                ),
            ],
            "responses": {"200": _response("One page.", "ConnectionPage"), **_errors(400)},
        }
    },
    "/api/v1/connections/{id}": {
        "parameters": [ID_PARAM],
        "get": {
            "operationId": "getConnection",
            "summary": "One connection (no tokens).",
            "responses": {"200": _response("The connection.", "Connection"), **_errors(400, 404)},
        },
        "delete": {
            "operationId": "deleteConnection",
            "summary": "Revoke at the platform (best effort), then delete the connection and its children.",
            "responses": {"200": _response("What was removed.", "Removal"), **_errors(400, 404, 503)},
        },
    },
    "/api/v1/connections/{id}/token": {
        "parameters": [ID_PARAM],
        "get": {
            "operationId": "getToken",
            "summary": "A usable access token, refreshed first when it lapses within 5 minutes. Audited.",
            "responses": {"200": _response("The token.", "Token"), **_errors(400, 404, 409, 502, 503)},
        },
    },
}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh copy each call)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "linkd internal API",
            "version": __version__,
            "description": "Every call needs `Authorization: Bearer LINKD_API_TOKEN`.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": copy.deepcopy(PATHS),
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
