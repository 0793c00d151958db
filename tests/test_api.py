"""The internal API over real HTTP: bearer auth, every route, refresh on read, revoke, OpenAPI document."""

from __future__ import annotations

import http.client
import re
import time
from typing import Any

import pytest

from linkd import hookimpl
from linkd.api import FALLBACK, ROUTES, actor_label, api_routes
from linkd.openapi import document

from .browser import Browser, Response

TOKEN = "api-k3Jr9vXq2LmP8sTzW4nB6yHc1dFgA5eR7uIoQ0wE"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture
def api_world(make_world: Any) -> Any:
    """`make_world` with LINKD_API_TOKEN set: `make_app` mounts the API on the main listener."""

    def make(**env: str) -> Any:
        return make_world(**{"LINKD_PROVIDERS": "example", "LINKD_API_TOKEN": TOKEN, **env})

    return make


@pytest.fixture
def world(api_world: Any) -> Any:
    return api_world()


def call(world: Any, method: str, path: str, token: str | None = TOKEN, **headers: str) -> Response:
    auth = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return Browser("application/json").request(method, world.url + path, headers={**auth, **headers})


def connect(world: Any, subject: str = "user-1") -> str:
    """Complete a connect of the example provider in a fresh browser; the new user's UUID."""
    world.sandboxes["example"].next_subject = subject
    response = Browser("application/json").follow(world.url + "/example/login")
    assert response.status == 200, response.text
    return str(response.json()["user_uuid"])


def connection_id(world: Any, account: str) -> int:
    rows = world.sql("tokens", "SELECT id FROM connections WHERE account_id = ?", (account,))
    return int(rows[0][0])


def current_token(world: Any, subject: str) -> str:
    fake = world.sandboxes["example"]
    return str(
        next(
            t
            for t in reversed(fake.minted)
            if t.startswith("at_") and t in fake.access and fake.access[t].subject == subject
        )
    )


def no_token_in(world: Any, text: str) -> None:
    for secret in world.sandboxes["example"].minted:
        assert secret not in text
    assert TOKEN not in text


class Listener:
    def __init__(self) -> None:
        self.removed: list[tuple[str, int, str, str]] = []

    @hookimpl
    def connection_removed(self, connection: Any, reason: str) -> None:
        self.removed.append((reason, connection.id, connection.account_id, connection.user_uuid))


# authentication -----------------------------------------------------------------------------------------
BAD_HEADERS = {
    "missing": {},
    "wrong token": {"Authorization": "Bearer " + TOKEN[:-1] + "x"},
    "prefix of the token": {"Authorization": "Bearer " + TOKEN[:-1]},
    "token plus a character": {"Authorization": "Bearer " + TOKEN + "x"},
    "lower-case scheme": {"Authorization": "bearer " + TOKEN},
    "upper-case scheme": {"Authorization": "BEARER " + TOKEN},
    "two spaces": {"Authorization": "Bearer  " + TOKEN},
    "tab": {"Authorization": "Bearer\t" + TOKEN},
    "no scheme": {"Authorization": TOKEN},
    "basic": {"Authorization": "Basic " + TOKEN},
    "empty bearer": {"Authorization": "Bearer "},
    "cookie only": {"Cookie": f"Authorization=Bearer {TOKEN}; session_id={TOKEN}; api_token={TOKEN}"},
    "custom header": {"X-Api-Token": TOKEN, "X-Authorization": "Bearer " + TOKEN},
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_every_route_refuses_a_caller_without_the_bearer_token(world: Any, case: str) -> None:
    uuid = connect(world)
    cid = connection_id(world, "user-1")
    for method, path in [
        ("GET", f"/api/v1/users/{uuid}"),
        ("DELETE", f"/api/v1/users/{uuid}"),
        ("GET", "/api/v1/connections"),
        ("GET", f"/api/v1/connections/{cid}"),
        ("DELETE", f"/api/v1/connections/{cid}"),
        ("GET", f"/api/v1/connections/{cid}/token?access_token={TOKEN}"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/api/v1/no/such/route"),
        ("POST", "/api/v1/connections"),
    ]:
        response = call(world, method, path, token=None, **BAD_HEADERS[case])
        assert response.status == 401, (case, method, path, response.status)
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="linkd"')
        assert response.json()["error"] == "unauthorized"
        assert response.headers["Cache-Control"] == "no-store"
        assert "Access-Control-Allow-Origin" not in response.headers
        no_token_in(world, response.text)
    assert world.count("tokens", "connections") == 1  # the DELETEs did nothing
    assert world.count("tokens", "audit") == 0
    assert world.sandboxes["example"].counts.get("revoke", 0) == 0


def test_a_wrong_token_is_told_apart_from_none_in_the_challenge(world: Any) -> None:
    assert "error=" not in call(world, "GET", "/api/v1/connections", token=None).headers["WWW-Authenticate"]
    wrong = call(world, "GET", "/api/v1/connections", token="x" * 40)
    assert wrong.headers["WWW-Authenticate"] == 'Bearer realm="linkd", error="invalid_token"'


def test_two_authorization_headers_are_refused(world: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", world.port, timeout=10)
    conn.putrequest("GET", "/api/v1/connections")
    conn.putheader("Authorization", "Bearer " + TOKEN)
    conn.putheader("Authorization", "Bearer " + TOKEN)
    conn.endheaders()
    assert conn.getresponse().status == 401
    conn.close()


def test_errors_are_json_whatever_the_client_accepts(world: Any) -> None:
    response = call(world, "GET", "/api/v1/users/not-a-uuid", Accept="text/html")
    assert response.status == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {"error": "bad_request", "message": "The user id is not a UUID."}


def test_the_api_is_off_without_a_configured_token(api_world: Any) -> None:
    world = api_world(LINKD_API_TOKEN="")
    for token in (None, "", TOKEN):
        response = call(world, "GET", "/api/v1/connections", token=token)
        assert response.status == 404 and response.json()["error"] == "not_found"


# happy paths --------------------------------------------------------------------------------------------
def test_user_and_connections(world: Any) -> None:
    first = connect(world, "user-1")
    second = connect(world, "user-2")
    assert first != second
    response = call(world, "GET", f"/api/v1/users/{first}")
    assert response.status == 200
    user = response.json()
    assert user["uuid"] == first and isinstance(user["created_at"], float)
    [conn] = user["connections"]
    assert conn["provider"] == "example" and conn["account_id"] == "user-1" and conn["user_uuid"] == first
    assert conn["status"] == "active" and conn["scopes"] == ["profile"] and conn["parent_id"] is None
    assert conn["expires_at"] == pytest.approx(time.time() + 3600, abs=60)
    no_token_in(world, response.text)
    assert call(world, "GET", f"/api/v1/users/{first.upper()}").json() == user  # any case, one user
    assert call(world, "GET", f"/api/v1/connections/{conn['id']}").json() == conn

    everything = call(world, "GET", "/api/v1/connections").json()
    assert [c["account_id"] for c in everything["connections"]] == ["user-1", "user-2"]
    assert everything["next"] is None
    no_token_in(world, str(everything))

    page1 = call(world, "GET", "/api/v1/connections?limit=1").json()
    assert [c["account_id"] for c in page1["connections"]] == ["user-1"] and page1["next"] == conn["id"]
    page2 = call(world, "GET", f"/api/v1/connections?limit=1&after={page1['next']}").json()
    assert [c["account_id"] for c in page2["connections"]] == ["user-2"] and page2["next"] is None

    def accounts(query: str) -> list[str]:
        response = call(world, "GET", "/api/v1/connections?" + query)
        assert response.status == 200, response.text
        return [c["account_id"] for c in response.json()["connections"]]

    assert accounts("account=user-2") == ["user-2"]
    assert accounts("provider=example&status=active") == ["user-1", "user-2"]
    assert accounts("status=reconnect") == []
    assert accounts("provider=shopify") == []
    assert accounts("provider=&status=&account=") == ["user-1", "user-2"]  # empty means no filter


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/users/not-a-uuid",
        "/api/v1/users/00000000-0000-0000-0000-00000000000",
        "/api/v1/users/00000000-0000-0000-0000-0000000000000",
        "/api/v1/users/%2e%2e",
        "/api/v1/connections/abc",
        "/api/v1/connections/-1",
        "/api/v1/connections/1e3/token",
        "/api/v1/connections/9999999999999999999999",
        "/api/v1/connections?status=bogus",
        "/api/v1/connections?limit=0",
        "/api/v1/connections?limit=501",
        "/api/v1/connections?after=-1",
        "/api/v1/connections?after=x",
        "/api/v1/connections?provider=a&provider=b",
        "/api/v1/connections?user=someone",
        "/api/v1/connections?provider=%ff",
        "/api/v1/connections?provider=a%00b",
    ],
)
def test_malformed_ids_and_queries_are_400(world: Any, path: str) -> None:
    response = call(world, "GET", path)
    assert response.status == 400, response.text
    assert response.json()["error"] == "bad_request"


def test_absent_user_and_connection_are_404(world: Any) -> None:
    for method, path in [
        ("GET", "/api/v1/users/00000000-0000-4000-8000-000000000000"),
        ("DELETE", "/api/v1/users/00000000-0000-4000-8000-000000000000"),
        ("GET", "/api/v1/connections/42"),
        ("GET", "/api/v1/connections/42/token"),
        ("DELETE", "/api/v1/connections/42"),
        ("GET", "/api/v1/users"),
        ("GET", "/api/v1/connections/1/token/more"),
    ]:
        response = call(world, method, path)
        assert response.status == 404, (method, path)
        assert response.json()["error"] == "not_found"


# tokens -------------------------------------------------------------------------------------------------
def test_a_token_read_returns_a_usable_token_and_is_audited(world: Any) -> None:
    connect(world)
    cid = connection_id(world, "user-1")
    response = call(world, "GET", f"/api/v1/connections/{cid}/token")
    assert response.status == 200
    body = response.json()
    assert body["access_token"] == current_token(world, "user-1")
    assert body["connection_id"] == cid and body["token_type"] == "bearer" and body["scopes"] == ["profile"]
    assert body["expires_at"] == pytest.approx(time.time() + 3600, abs=60)
    assert response.headers["Cache-Control"] == "no-store"
    [audit] = world.sql("tokens", "SELECT actor, action, connection_id, at FROM audit")
    assert audit[:3] == (actor_label(TOKEN), "token_read", cid)
    assert TOKEN not in audit[0] and audit[3] == pytest.approx(time.time(), abs=60)
    call(world, "GET", f"/api/v1/connections/{cid}/token")
    assert world.count("tokens", "audit") == 2


def test_a_token_due_to_lapse_is_refreshed_before_it_is_returned(world: Any) -> None:
    connect(world)
    cid = connection_id(world, "user-1")
    fake = world.sandboxes["example"]
    before = call(world, "GET", f"/api/v1/connections/{cid}/token").json()
    spent = fake.token_requests[-1]
    assert fake.counts["token"] == 1 and spent["grant_type"] == "authorization_code"

    tokens = world.services.tokens
    tokens.clock = lambda: time.time() + 3600 - 60  # one minute before the token lapses: inside the margin
    try:
        after = call(world, "GET", f"/api/v1/connections/{cid}/token").json()
    finally:
        tokens.clock = time.time
    assert fake.counts["token"] == 2 and fake.token_requests[-1]["grant_type"] == "refresh_token"
    assert after["access_token"] != before["access_token"]
    assert after["access_token"] == current_token(world, "user-1")
    assert after["expires_at"] > before["expires_at"]
    [(stored_expiry,)] = world.sql("tokens", "SELECT expires_at FROM connections WHERE id = ?", (cid,))
    assert stored_expiry == after["expires_at"]

    again = call(world, "GET", f"/api/v1/connections/{cid}/token").json()  # fresh now: no second refresh
    assert again["access_token"] == after["access_token"] and fake.counts["token"] == 2


def test_a_refused_refresh_is_409_and_marks_the_connection(world: Any) -> None:
    connect(world)
    cid = connection_id(world, "user-1")
    world.sandboxes["example"].refresh.clear()  # the platform forgot the grant
    world.services.tokens.clock = lambda: time.time() + 3600
    response = call(world, "GET", f"/api/v1/connections/{cid}/token")
    assert response.status == 409 and response.json()["error"] == "reconnect_required"
    assert call(world, "GET", f"/api/v1/connections/{cid}").json()["status"] == "reconnect"
    assert world.count("tokens", "audit") == 0  # no token left linkd


# removing -----------------------------------------------------------------------------------------------
def test_deleting_a_connection_revokes_it_at_the_platform_then_deletes_and_tells_plugins(world: Any) -> None:
    listener = Listener()
    world.services.pm.register(listener)
    uuid = connect(world)
    cid = connection_id(world, "user-1")
    token = current_token(world, "user-1")
    response = call(world, "DELETE", f"/api/v1/connections/{cid}")
    assert response.status == 200
    body = response.json()
    assert [c["id"] for c in body["removed"]] == [cid] and body["removed"][0]["user_uuid"] == uuid
    assert body["revoked"] == [cid] and body["revoke_failed"] == []
    fake = world.sandboxes["example"]
    assert fake.counts["revoke"] == 1 and token not in fake.access
    assert listener.removed == [("disconnect", cid, "user-1", uuid)]
    assert world.count("tokens", "connections") == 0
    assert ("disconnect", cid) in world.sql("tokens", "SELECT action, connection_id FROM audit")
    assert call(world, "DELETE", f"/api/v1/connections/{cid}").status == 404
    assert call(world, "GET", f"/api/v1/users/{uuid}").json()["connections"] == []


def test_a_failed_revoke_still_deletes_locally(world: Any) -> None:
    connect(world)
    cid = connection_id(world, "user-1")
    world.services.registry.get("example").context.settings["EXAMPLE_BASE_URL"] = "http://127.0.0.1:9"
    body = call(world, "DELETE", f"/api/v1/connections/{cid}").json()
    assert body["revoked"] == [] and body["revoke_failed"] == [cid] and len(body["removed"]) == 1
    assert world.count("tokens", "connections") == 0


def test_deleting_a_user_revokes_and_removes_everything_of_theirs_only(world: Any) -> None:
    listener = Listener()
    world.services.pm.register(listener)
    gone = connect(world, "user-1")
    kept = connect(world, "user-2")
    response = call(world, "DELETE", f"/api/v1/users/{gone}")
    assert response.status == 200
    assert [c["account_id"] for c in response.json()["removed"]] == ["user-1"]
    assert world.sandboxes["example"].counts["revoke"] == 1
    assert [(r[0], r[2], r[3]) for r in listener.removed] == [("user_deleted", "user-1", gone)]
    assert [c["user_uuid"] for c in response.json()["removed"]] == [gone]
    assert call(world, "GET", f"/api/v1/users/{gone}").status == 404
    assert call(world, "GET", f"/api/v1/users/{kept}").status == 200
    assert world.count("tokens", "users") == 1


# the OpenAPI document -----------------------------------------------------------------------------------
def template_of(pattern: str) -> str:
    return re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern).replace("\\", "")


def test_every_route_is_documented_and_every_documented_route_exists(world: Any) -> None:
    response = call(world, "GET", "/api/v1/openapi.json")
    assert response.status == 200
    doc = response.json()
    assert doc == document() and doc["openapi"] == "3.1.0"
    routes = api_routes()
    assert routes[-1][0] == FALLBACK and len(routes) == len(ROUTES) + 1
    served = {template_of(pattern): handler for pattern, handler in routes[:-1]}
    assert set(served) == set(doc["paths"])
    for path, handler in served.items():
        item = doc["paths"][path]
        implemented = {m for m in ("get", "post", "put", "patch", "delete") if m in vars(handler)}
        assert implemented == set(item) - {"parameters"}, path
        declared = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"\{(\w+)\}", path)), path
        for method in implemented:
            assert {"200", "401"} <= set(item[method]["responses"]), (path, method)


class Checker:
    """Just enough JSON Schema (2020-12, as OpenAPI 3.1 uses it) for this document's schemas."""

    TYPES: dict[str, type | tuple[type, ...]] = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
        "null": type(None),
    }

    def __init__(self, doc: dict[str, Any]) -> None:
        self.schemas = doc["components"]["schemas"]

    def check(self, value: Any, schema: dict[str, Any], where: str = "$") -> None:
        if "$ref" in schema:
            return self.check(value, self.schemas[schema["$ref"].rsplit("/", 1)[1]], where)
        types = schema.get("type")
        if types is not None:
            names = [types] if isinstance(types, str) else types
            ok = any(
                isinstance(value, self.TYPES[n]) and not (isinstance(value, bool) and n != "boolean")
                for n in names
            )
            assert ok, f"{where}: {value!r} is not {names}"
        if "enum" in schema:
            assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
        if schema.get("format") == "uuid" and isinstance(value, str):
            assert UUID_RE.fullmatch(value), f"{where}: {value!r} is not a UUID"
        if isinstance(value, dict):
            for name in schema.get("required", []):
                assert name in value, f"{where}: {name} is missing"
            props = schema.get("properties", {})
            if schema.get("additionalProperties") is False:
                assert set(value) <= set(props), f"{where}: undocumented {set(value) - set(props)}"
            for name, sub in props.items():
                if name in value:
                    self.check(value[name], sub, f"{where}.{name}")
        if isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                self.check(item, schema["items"], f"{where}[{i}]")
        return None


def test_the_checker_catches_what_it_must() -> None:
    checker = Checker(document())
    good = {"error": "x", "message": "y"}
    checker.check(good, {"$ref": "#/components/schemas/Error"})
    for bad, schema in [
        ({"error": "x"}, "Error"),
        ({**good, "extra": 1}, "Error"),
        ({"connections": [{"id": True}], "next": None}, "ConnectionPage"),
        ({"connections": [], "next": "1"}, "ConnectionPage"),
    ]:
        with pytest.raises(AssertionError):
            checker.check(bad, {"$ref": f"#/components/schemas/{schema}"})


def test_every_documented_response_is_what_real_calls_return(world: Any) -> None:
    """Drive every documented (path, method, status) for real and validate each body against its schema."""
    doc = document()
    checker = Checker(doc)
    seen: set[tuple[str, str, str]] = set()
    fake = world.sandboxes["example"]

    def hit(template: str, method: str, path: str, status: int, token: str | None = TOKEN) -> Response:
        response = call(world, method.upper(), path, token=token)
        assert response.status == status, (method, path, response.status, response.text)
        schema = doc["paths"][template][method]["responses"][str(status)]["content"]["application/json"][
            "schema"
        ]
        checker.check(response.json(), schema)
        if not (path.endswith("/token") and status == 200):
            no_token_in(world, response.text)
        seen.add((template, method, str(status)))
        return response

    uuid = connect(world, "user-1")
    connect(world, "user-2")
    one, two = connection_id(world, "user-1"), connection_id(world, "user-2")
    absent_uuid = "00000000-0000-4000-8000-000000000000"
    user, conns, conn, token = (
        "/api/v1/users/{uuid}",
        "/api/v1/connections",
        "/api/v1/connections/{id}",
        "/api/v1/connections/{id}/token",
    )
    for template, method in [(t, m) for t, item in doc["paths"].items() for m in item if m != "parameters"]:
        sample = template.replace("{uuid}", uuid).replace("{id}", str(one))
        hit(template, method, sample, 401, token=None)
    hit("/api/v1/openapi.json", "get", "/api/v1/openapi.json", 200)
    hit(user, "get", f"/api/v1/users/{uuid}", 200)
    hit(user, "get", "/api/v1/users/nope", 400)
    hit(user, "get", f"/api/v1/users/{absent_uuid}", 404)
    hit(conns, "get", "/api/v1/connections?status=active&limit=1", 200)
    hit(conns, "get", "/api/v1/connections?limit=x", 400)
    hit(conn, "get", f"/api/v1/connections/{one}", 200)
    hit(conn, "get", "/api/v1/connections/x", 400)
    hit(conn, "get", "/api/v1/connections/424242", 404)
    hit(token, "get", f"/api/v1/connections/{one}/token", 200)
    hit(token, "get", "/api/v1/connections/x/token", 400)
    hit(token, "get", "/api/v1/connections/424242/token", 404)

    tokens = world.services.tokens
    tokens.clock = lambda: time.time() + 3600  # every token is due from here on
    provider = world.services.registry.get("example")
    base = provider.context.settings["EXAMPLE_BASE_URL"]
    provider.context.settings["EXAMPLE_BASE_URL"] = "http://127.0.0.1:9"  # the platform is down
    hit(token, "get", f"/api/v1/connections/{one}/token", 502)
    provider.context.settings["EXAMPLE_BASE_URL"] = base
    world.sql(
        "tokens",
        "UPDATE connections SET refresh_owner = 'another', refresh_until = ? ",
        (tokens.clock() + 600,),
    )
    tokens.wait_budget = 0.2  # someone else holds the refresh lease past our wait budget
    busy = hit(token, "get", f"/api/v1/connections/{one}/token", 503)
    assert busy.headers["Retry-After"].isdigit()
    world.sql("tokens", "UPDATE connections SET refresh_owner = NULL, refresh_until = NULL")
    fake.refresh.clear()
    hit(token, "get", f"/api/v1/connections/{two}/token", 409)

    store = world.services.store
    store._lock_wait = 0.2  # a writer holds the token database past the store's (shortened) wait budget
    with _write_lock(world.settings.token_db_path):
        hit(conn, "delete", f"/api/v1/connections/{one}", 503)
        hit(user, "delete", f"/api/v1/users/{uuid}", 503)
    hit(conn, "delete", "/api/v1/connections/x", 400)
    hit(conn, "delete", "/api/v1/connections/424242", 404)
    hit(conn, "delete", f"/api/v1/connections/{two}", 200)
    hit(user, "delete", "/api/v1/users/nope", 400)
    hit(user, "delete", f"/api/v1/users/{absent_uuid}", 404)
    hit(user, "delete", f"/api/v1/users/{uuid}", 200)

    documented = {
        (t, m, s)
        for t, item in doc["paths"].items()
        for m, op in item.items()
        if m != "parameters"
        for s in op["responses"]
    }
    assert seen == documented


class _write_lock:
    def __init__(self, path: str) -> None:
        import sqlite3

        self.conn = sqlite3.connect(path, isolation_level=None, timeout=5)

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, *exc: Any) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()
