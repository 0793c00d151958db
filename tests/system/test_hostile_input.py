"""SECURITY.md I1-I3, I6: hostile input on every route of a running `linkd serve`, byte for byte.

Hypothesis generates requests over every route (the provider segment, path segments,
query, headers, bodies) from hostile material: oversized values, NUL, CR/LF, invalid
UTF-8, RTL marks, fullwidth letters, markup, traversal, repeated parameters; fixed
cases add 2,000 parameters and oversized URIs, headers and bodies. Requests go out on a
raw socket (rawhttp.py), so nothing is repaired on the way. Every answer must be:

- an answer below 500, never a silent close: a header section over the server's 16 KiB
  limit gets a 431 (`linkd/overflow.py`; Tornado alone would drop the connection);
- free of tracebacks and internals, free of any injected markup or header;
- free of side effects: a refused request (4xx) changes no row of either database,
  an accepted one changes none either, except a login's new session and state;

and afterwards the workers' RSS is flat (a generous bound) and the log holds no traceback.
"""

from __future__ import annotations

import json
import socket
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..browser import Browser
from .conftest import Fakes, Launcher, Linkd, connect, serve_fakes
from .rawhttp import RawResponse, parse, send

MAX_HEADERS = 16 * 1024  # linkd's header-section limit (daemon.MAX_HEADERS)
MAX_BODY = 1024 * 1024  # and its body limit
RSS_BOUND_KB = 30 * 1024  # generous: growth per worker over the whole module
EXAMPLES = {"query": 300, "headers": 200, "bodies": 200}
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

FIXED: list[bytes] = [
    b"",
    b"\x00",
    b"a\x00b",
    b"\r\n",
    b"\rX",
    b"\nX",
    b"\r\nX-Injected: pwned",
    b"%0d%0aX-Injected:%20pwned",
    "\u202eevil\u202c".encode(),
    "\u200f\u202bacme".encode(),
    "ｓｈｏｐｉｆｙ".encode(),
    "ａｃｍｅ.myshopify.com".encode(),
    "acmé.myshopify.com".encode(),
    b"acme.myshopify.com\n",
    b"acme.myshopify.com%0a",
    b"good.myshopify.com.evil.com",
    b"good.myshopify.com@evil.com",
    b"<svg/onload=alert(1)>",
    b'"><script>alert(1)</script>',
    b"<img src=x onerror=alert(1)>",
    b"javascript:alert(1)",
    b"../../etc/passwd",
    b"..%2f..%2f..%2fetc%2fpasswd",
    b"%2e%2e",
    b"' OR 1=1 --",
    b"${jndi:ldap://x/a}",
    b"{{7*7}}",
    b"%",
    b"%zz",
    b"%ff%fe%00",
    b"+",
    b"&",
    b"=",
    b";",
    b"//evil.example",
    b"/\\evil.example",
    b"https:evil.example",
    b"\xff",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xe2\x80",
    "é".encode() * 3,
    "\U0001f600".encode(),
    b"A" * 5000,
    b"%41" * 3000,
    "é".encode() * 4000,
    b"\x00" * 1000,
    b"1",
    b"-1",
    b"99999999999999999999999",
    b"A" * 43,
]
MARKUP = (b"<svg", b"<script>alert", b"<img src=x", b"javascript:alert")
PROVIDERS = [b"example", b"shopify", b"facebook", b"SHOPIFY", b"__init__", b"..", b"%2e%2e", b"declared"]
KEYS = [b"shop", b"state", b"code", b"hmac", b"error", b"error_description", b"timestamp", b"host", b"limit"]
HEADER_NAMES = [
    b"Cookie",
    b"Accept",
    b"Host",
    b"X-Forwarded-Host",
    b"X-Forwarded-Proto",
    b"X-Forwarded-For",
    b"X-Real-Ip",
    b"Authorization",
    b"X-Shopify-Hmac-Sha256",
    b"X-Shopify-Topic",
    b"X-Shopify-Shop-Domain",
    b"X-Shopify-Event-Id",
    b"Content-Type",
    b"Referer",
    b"Origin",
    b"X-XSRFToken",
    b"User-Agent",
    b"Accept-Language",
    b"Accept-Encoding",
    b"If-None-Match",
    b"Range",
    b"Expect",
]
ROUTES: list[tuple[bytes, str]] = [
    (b"GET", "/"),
    (b"GET", "/healthz"),
    (b"POST", "/logout"),
    (b"POST", "/connections/{id}/disconnect"),
    (b"GET", "/{p}/login"),
    (b"GET", "/{p}/{s}/login"),
    (b"GET", "/{p}/callback"),
    (b"POST", "/{p}/webhook"),
    (b"POST", "/{p}/webhook/{s}"),
    (b"GET", "/{p}/deletion/{s}"),
    (b"GET", "/api/v1/openapi.json"),
    (b"GET", "/api/v1/users/{s}"),
    (b"DELETE", "/api/v1/users/{s}"),
    (b"GET", "/api/v1/connections"),
    (b"GET", "/api/v1/connections/{s}"),
    (b"DELETE", "/api/v1/connections/{s}"),
    (b"GET", "/api/v1/connections/{s}/token"),
    (b"GET", "/static/linkd.css"),
    (b"GET", "/{s}"),
    (b"GET", "/{s}/{s}"),
]
READ_ONLY_API = (
    "/api/v1/openapi.json",
    "/api/v1/users/{s}",
    "/api/v1/connections",
    "/api/v1/connections/{s}",
)


# -- the world ----------------------------------------------------------------------------------------
@dataclass
class World:
    daemon: Linkd
    fakes: Fakes
    baseline_rss: dict[int, int] = field(default_factory=dict)
    tried: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    fakes = serve_fakes()
    launcher = Launcher(Path(tmp_path_factory.mktemp("hostile")))
    daemon = launcher(fakes)
    browser = Browser("application/json")  # data for the routes that read it
    assert connect(browser, daemon.url, "/shopify/login?shop=acme").status == 200
    assert connect(browser, daemon.url, "/facebook/login").status == 200
    assert connect(Browser("application/json"), daemon.url, "/example/login").status == 200
    here = World(daemon, fakes)
    for method, template in ROUTES * 3:  # warm every route up before the memory baseline
        for value in (b"x", b"\xff", b"A" * 3000):
            attack(here, method, fill(template, value), [(b"Accept", b"text/html")], b"")
    here.baseline_rss = daemon.rss_kb()
    yield here
    launcher.close()
    fakes.server.stop()


def fill(template: str, value: bytes, provider: bytes = b"shopify") -> bytes:
    return (
        template.encode()
        .replace(b"{p}", provider)
        .replace(b"{id}", value)
        .replace(b"{s}", urllib.parse.quote_from_bytes(value, safe="").encode() or b"x")
    )


def clean_error(response: RawResponse) -> bool:
    """A JSON `{"error", "message"}` or linkd's HTML error page."""
    content_type = response.header("Content-Type") or ""
    if content_type.startswith("application/json"):
        try:
            return set(json.loads(response.body)) == {"error", "message"}
        except ValueError:
            return False
    return content_type.startswith("text/html") and response.body.lstrip().lower().startswith(
        b"<!doctype html"
    )


def is_login(target: bytes) -> bool:
    return target.split(b"?", 1)[0].endswith(b"/login")


def attack(
    world: World,
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    host: bytes | None = None,
) -> RawResponse:
    """Send one hostile request and check everything SECURITY.md asks of its answer."""
    daemon = world.daemon
    before = daemon.snapshot()
    response = send(daemon.port, method, target, headers, body, host=host)
    after = daemon.snapshot()
    world.tried += 1
    request = (method, target[:300], [(n, v[:100]) for n, v in headers], body[:100])
    assert response.status is not None, f"closed without an answer: {request}"
    head = len(method) + len(target) + sum(len(n) + len(v) + 4 for n, v in headers) + len(host or b"") + 64
    ends_early = b"\n" in target or any(b"\n" in n + v for n, v in headers)  # may close the section sooner
    if head > MAX_HEADERS + 200 and not ends_early:
        assert response.status == 431, (response.status, request)
    world.statuses[response.status] = world.statuses.get(response.status, 0) + 1
    assert response.status < 500, (response.status, response.body[:500], request)
    if response.status >= 400 and response.header("Content-Security-Policy") and method != b"HEAD":
        # an answer linkd's handlers wrote (Tornado's own 400 for broken HTTP has no headers)
        assert clean_error(response), (response.status, response.headers, response.body[:300], request)
    text = response.body.lower()
    for marker in (b"traceback", b'file "', b"sqlite3.", b"operationalerror", b"tornado.web"):
        assert marker not in text, (marker, response.body[:500], request)
    for markup in MARKUP:
        assert markup not in text, (markup, response.body[:500], request)
    for name, value in response.headers:
        assert name.lower() != "x-injected" and "pwned" not in value, (response.headers, request)
    if response.status < 400 and is_login(target):  # a login may add its session and state, no more
        for table in ("sessions", "states"):
            assert set(before[table]) <= set(after[table]), request
            after[table] = before[table]
    assert after == before, f"a hostile request changed the database: {request}"
    return response


# -- strategies ---------------------------------------------------------------------------------------
hostile = st.one_of(
    st.sampled_from(FIXED),
    st.binary(max_size=64),
    st.text(max_size=32).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.tuples(st.sampled_from(FIXED), st.sampled_from(FIXED)).map(b"".join),
)
encoding = st.sampled_from(["raw", "quoted", "every-byte"])


def encode(value: bytes, how: str) -> bytes:
    if how == "raw":
        return value
    if how == "quoted":
        return urllib.parse.quote_from_bytes(value, safe="").encode()
    return "".join(f"%{b:02X}" for b in value).encode()


@st.composite
def targets(draw: st.DrawFn) -> tuple[bytes, str, bytes]:
    """(method, route template, target) with hostile path segments and query."""
    method, template = draw(st.sampled_from(ROUTES))
    how = draw(encoding)
    path = template.encode().replace(
        b"{p}", draw(st.sampled_from(PROVIDERS) | hostile.map(lambda v: encode(v, how)))
    )
    while b"{s}" in path or b"{id}" in path:
        segment = encode(draw(hostile), how) or b"x"
        path = path.replace(b"{s}", segment, 1).replace(b"{id}", segment, 1)
    pairs = draw(st.lists(st.tuples(st.sampled_from(KEYS) | hostile, hostile), max_size=8))
    query = b"&".join(encode(k, how) + b"=" + encode(v, how) for k, v in pairs)
    return method, template, path + (b"?" + query if pairs else b"")


def auth(world: World, method: bytes, template: str, valid: bool) -> list[tuple[bytes, bytes]]:
    if valid and method == b"GET" and template in READ_ONLY_API:
        return [(b"Authorization", b"Bearer " + world.daemon.api_token.encode())]
    return []


SETTINGS: Any = dict(
    deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@settings(max_examples=EXAMPLES["query"], **SETTINGS)
@given(
    request=targets(),
    accept=st.sampled_from([b"text/html", b"application/json", b"*/*"]),
    valid=st.booleans(),
)
def test_hostile_paths_and_queries(
    world: World, request: tuple[bytes, str, bytes], accept: bytes, valid: bool
) -> None:
    method, template, target = request
    attack(world, method, target, [(b"Accept", accept), *auth(world, method, template, valid)], b"")


header_names = st.sampled_from(HEADER_NAMES) | hostile.filter(lambda v: b"\r\n\r\n" not in v)


@settings(max_examples=EXAMPLES["headers"], **SETTINGS)
@given(
    request=targets(),
    headers=st.lists(st.tuples(header_names, hostile), min_size=1, max_size=6),
    host=st.none() | hostile,
)
def test_hostile_headers(
    world: World, request: tuple[bytes, str, bytes], headers: list[tuple[bytes, bytes]], host: bytes | None
) -> None:
    method, _, target = request
    attack(world, method, target, headers, b"", host=host)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(Content-Type, body): binary, JSON-ish, form-encoded with hostile pairs, huge ones."""
    kind = draw(st.sampled_from(["binary", "json", "form", "multipart", "many", "huge"]))
    if kind == "binary":
        return draw(st.sampled_from([b"application/octet-stream", b"application/json"]) | hostile), draw(
            st.binary(max_size=2048)
        )
    if kind == "json":
        value = draw(hostile).decode("latin-1")
        doc = draw(st.sampled_from(['{"shop_domain": %s}', "[%s]", '{"a": {"b": %s}}', "%s"]))
        return b"application/json", (doc % ('"' + value + '"')).encode("utf-8", "surrogatepass")
    pairs = draw(st.lists(st.tuples(st.sampled_from(KEYS) | hostile, hostile), max_size=10))
    if kind == "form":
        how = draw(encoding)
        return b"application/x-www-form-urlencoded", b"&".join(
            encode(k, how) + b"=" + encode(v, how) for k, v in pairs
        )
    if kind == "multipart":
        parts = b"".join(
            b'--xx\r\nContent-Disposition: form-data; name="' + k + b'"\r\n\r\n' + v + b"\r\n"
            for k, v in pairs
        )
        return b"multipart/form-data; boundary=xx", parts + draw(
            st.sampled_from([b"--xx--\r\n", b"", b"--xx"])
        )
    if kind == "many":
        return b"application/x-www-form-urlencoded", b"&".join(b"k%d=v" % i for i in range(2000))
    return b"application/json", b"[" * draw(st.sampled_from([10, 10_000, MAX_BODY + 1]))


@settings(max_examples=EXAMPLES["bodies"], **SETTINGS)
@given(
    request=targets(),
    method=st.sampled_from([b"POST", b"PUT", b"DELETE", b"PATCH"]),
    body=bodies(),
    topic=st.sampled_from([b"app/uninstalled", b"shop/redact", b"customers/redact"]) | hostile,
)
def test_hostile_bodies(
    world: World, request: tuple[bytes, str, bytes], method: bytes, body: tuple[bytes, bytes], topic: bytes
) -> None:
    _, _, target = request
    content_type, payload = body
    headers = [
        (b"Content-Type", content_type),
        (b"X-Shopify-Topic", topic),
        (b"X-Shopify-Shop-Domain", b"acme.myshopify.com"),
        (b"X-Shopify-Hmac-Sha256", b"AAAA" * 11),
    ]
    attack(world, method, target, headers, payload)


# -- fixed edge cases -------------------------------------------------------------------------------
MANY_REPEATED = b"&".join([b"shop=a"] * 2000)  # 14 KB: under the header-section limit
MANY_DISTINCT = b"&".join(b"k%d=" % i for i in range(2000))


@pytest.mark.parametrize(("method", "template"), ROUTES, ids=[f"{m.decode()} {t}" for m, t in ROUTES])
def test_two_thousand_parameters_and_oversized_values(world: World, method: bytes, template: str) -> None:
    target = fill(template, b"acme")
    for query in (MANY_REPEATED, MANY_DISTINCT, b"state=" + b"A" * 9000, b"code=" + b"%ff" * 2000):
        response = attack(world, method, target + b"?" + query, [], b"")
        assert response.status is not None, "answered"
    # past the header-section limit: 431, with the body's JSON error, and nothing changed
    for over in (
        attack(world, method, target + b"?state=" + b"A" * (MAX_HEADERS + 100), [], b""),
        attack(world, method, target, [(b"Cookie", b"session_id=" + b"A" * (MAX_HEADERS + 100))], b""),
        attack(world, method, target, [(b"X-Filler-%d" % i, b"v" * 200) for i in range(100)], b""),
        attack(world, method, target, [(b"Cookie", b"session_id=" + b"A" * (20 * MAX_HEADERS))], b""),
    ):
        assert over.status == 431 and b'"headers_too_large"' in over.body, (over.status, over.body[:200])
    response = attack(world, b"POST", target, [(b"Content-Type", b"application/json")], b"{" * (MAX_BODY + 1))
    assert response.status is not None and 400 <= response.status < 500, response.status


def test_an_over_long_chunk_size_line_gets_a_400_not_a_silent_close(world: World) -> None:
    request = (
        b"POST /shopify/webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"f" * 100  # Tornado reads a chunk-size line within 64 bytes
        + b"\r\n"
    )
    before = world.daemon.snapshot()
    with socket.create_connection(("127.0.0.1", world.daemon.port), timeout=15) as sock:
        sock.sendall(request)
        raw = b""
        while data := sock.recv(65536):
            raw += data
    response = parse(raw)
    assert response.status == 400 and b'"bad_request"' in response.body, raw[:300]
    assert world.daemon.snapshot() == before


def test_a_non_utf8_path_segment_gets_a_clean_error_page(world: World) -> None:
    lines = len(world.daemon.log().splitlines())
    for target in (b"/shopify/%FF/login", b"/%FF/login", b"/example/%C0%AF/login", b"/%C0%AF/callback"):
        response = send(world.daemon.port, b"GET", target, [(b"Accept", b"text/html")])
        assert response.status == 400, response.status
        assert clean_error(response), (target, response.headers, response.body[:200])
    new = "\n".join(world.daemon.log().splitlines()[lines:])
    assert "Traceback" not in new, new[:3000]


def logged_tracebacks(log: str) -> list[str]:
    """Log lines with a traceback or an unhandled error."""
    return [line for line in log.splitlines() if "Traceback" in line or "unhandled" in line]


def test_memory_stays_flat_and_no_traceback_is_logged(world: World) -> None:
    after = world.daemon.rss_kb()
    assert set(after) == set(world.baseline_rss), "a worker was replaced during the attack"
    growth = {pid: after[pid] - world.baseline_rss[pid] for pid in after}
    tracebacks = logged_tracebacks(world.daemon.log())
    assert not tracebacks, tracebacks[:3]
    print(
        f"hostile input: {world.tried} requests, statuses {dict(sorted(world.statuses.items()))}, "
        f"worker RSS "
        f"{world.baseline_rss} -> {after} kB (growth {growth} kB, bound {RSS_BOUND_KB} kB)"
    )
    assert all(g < RSS_BOUND_KB for g in growth.values()), growth
