"""linkd/http_pool.py through `Upstream`: keep-alive reuse, and each case where a connection is NOT reused.

Real servers on loopback, in the test's own event loop: a Tornado app for ordinary
answers (it records the client port of every request, so reuse is proven from the
server's side), and a raw asyncio server for what Tornado would never send (HTTP/1.0,
no length, a close in the middle of an answer, a close instead of an answer).
TLS runs against a certificate made here with `cryptography`.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import gzip
import ipaddress
import json
import ssl
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from linkd.errors import ProviderError
from linkd.http_pool import HTTPPool
from linkd.upstream import MAX_BODY, Upstream

from .servers import ServerThread

TIMEOUT = 5.0


# ----------------------------------------------------------------------------- a Tornado app


class Record:
    """What the server saw: the client port of each request, in order, and a few request headers."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.accept_encoding: list[str] = []
        self.connection_header: list[str] = []
        self.bodies: list[bytes] = []
        self.gate_count = 0
        self.gate_size = 0
        self.gate_open = asyncio.Event()
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    def distinct(self) -> int:
        return len(set(self.ports))


class Base(tornado.web.RequestHandler):
    def initialize(self, record: Record) -> None:
        self.record = record

    def check_xsrf_cookie(self) -> None:
        return None

    def prepare(self) -> None:
        stream = self.request.connection.stream  # type: ignore[union-attr]
        self.record.ports.append(stream.socket.getpeername()[1])
        self.record.accept_encoding.append(self.request.headers.get("Accept-Encoding", ""))
        self.record.connection_header.append(self.request.headers.get("Connection", ""))
        self.record.bodies.append(self.request.body)


class Json(Base):
    def get(self) -> None:
        self.finish({"ok": True, "n": len(self.record.ports)})

    def post(self) -> None:
        self.finish({"form": self.get_body_argument("a"), "type": self.request.headers["Content-Type"]})


class CloseAfter(Base):
    def get(self) -> None:
        # Tornado keeps the socket open: the client must still not reuse it
        self.set_header("Connection", "close")
        self.finish({"ok": True})


class Big(Base):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(b" " * (MAX_BODY + 1))


class BigChunked(Base):
    async def get(self) -> None:
        piece = b" " * 65536
        try:
            for _ in range(MAX_BODY // len(piece) + 2):  # no Content-Length: chunked, over the cap
                self.write(piece)
                await self.flush()
        except tornado.iostream.StreamClosedError:
            return


class Gzipped(Base):
    def get(self) -> None:
        self.set_header("Content-Encoding", "gzip")
        self.set_header("Content-Type", "application/json")
        self.finish(gzip.compress(json.dumps({"zipped": "yes " * 50}).encode()))


class GzipBomb(Base):
    def get(self) -> None:
        self.set_header("Content-Encoding", "gzip")
        self.finish(gzip.compress(b"\0" * (MAX_BODY + 1)))


class Slow(Base):
    async def get(self) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self.record.release.wait(), 3 * TIMEOUT)
        self.finish({"late": True})


class NotFoundJson(Base):
    def get(self) -> None:
        self.set_status(404)
        self.finish({"error": {"code": 803, "message": "Unknown path"}})


class Gate(Base):
    """Answers only once `gate_size` requests are in at the same time: concurrency, proven without sleeps."""

    async def get(self) -> None:
        self.record.gate_count += 1
        self.record.arrived.set()
        if self.record.gate_count >= self.record.gate_size:
            self.record.gate_open.set()
        await asyncio.wait_for(self.record.gate_open.wait(), TIMEOUT)
        self.finish({"ok": True})


def make_app(record: Record) -> tornado.web.Application:
    kw = {"record": record}
    return tornado.web.Application(
        [
            (r"/json", Json, kw),
            (r"/close", CloseAfter, kw),
            (r"/big", Big, kw),
            (r"/big-chunked", BigChunked, kw),
            (r"/gzip", Gzipped, kw),
            (r"/bomb", GzipBomb, kw),
            (r"/slow", Slow, kw),
            (r"/missing", NotFoundJson, kw),
            (r"/gate", Gate, kw),
        ]
    )


@asynccontextmanager
async def tornado_server(ssl_options: ssl.SSLContext | None = None) -> AsyncIterator[tuple[str, Record]]:
    """The app above on a free loopback port of the running loop."""
    record = Record()
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(make_app(record), ssl_options=ssl_options)
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    scheme = "https" if ssl_options else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}", record
    finally:
        record.release.set()
        record.gate_open.set()
        server.stop()
        await server.close_all_connections()


# ------------------------------------------------------------------------- a raw server

Behave = Callable[[int, int], Awaitable["bytes | None"]]


class RawServer:
    """asyncio server whose answers are whatever `behave(connection_index, request_number)` returns.

    None closes the connection without an answer; bytes are written as they are, and the
    connection stays open for another request unless the bytes end with the marker CLOSE.
    """

    CLOSE = b"<close>"

    def __init__(self, behave: Behave, tls: ssl.SSLContext | None = None) -> None:
        self.behave = behave
        self.tls = tls
        self.requests: list[int] = []  # requests read, per connection
        self.client_closed: list[asyncio.Event] = []  # set when the client closed the connection
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(self.requests)
        self.requests.append(0)
        self.client_closed.append(asyncio.Event())
        self.writers.append(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    if not exc.partial:
                        self.client_closed[index].set()
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                self.requests[index] += 1
                answer = await self.behave(index, self.requests[index])
                if answer is None:
                    return
                close = answer.endswith(self.CLOSE)
                writer.write(answer.removesuffix(self.CLOSE))
                await writer.drain()
                if close:
                    return
        except ConnectionError:
            return
        finally:
            writer.close()

    async def close_connections(self) -> None:
        """Close every open connection from the server's side (what a platform's idle timeout does)."""
        for writer in self.writers:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.close_connections()
        await self.server.wait_closed()


def answer(
    body: bytes = b'{"ok": true}', *, version: str = "1.1", extra: str = "", length: bool = True
) -> bytes:
    head = f"HTTP/{version} 200 OK\r\nContent-Type: application/json\r\n{extra}"
    if length:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


@asynccontextmanager
async def raw_server(behave: Behave, tls: ssl.SSLContext | None = None) -> AsyncIterator[RawServer]:
    server = await RawServer(behave, tls).start()
    try:
        yield server
    finally:
        await server.stop()


async def ok(index: int, number: int) -> bytes:
    """A raw server's `behave` that answers every request with `answer()` and keeps the connection."""
    return answer()


async def hang_up(index: int, number: int) -> None:
    """A raw server's `behave` that closes every connection instead of answering."""
    return None


@asynccontextmanager
async def client(timeout: float = TIMEOUT, **options: Any) -> AsyncIterator[Upstream]:
    """An `Upstream` closed however the test ends, so no pooled connection outlives it.

    Listed after a server in one `async with`, it is closed before that server stops, and
    what a test asserts after the block is checked after both.
    """
    upstream = Upstream(timeout, **options)
    try:
        yield upstream
    finally:
        upstream.close()


def run(main: Callable[[], Awaitable[None]]) -> None:
    async def wrapped() -> None:
        await main()

    asyncio.run(wrapped())


# ------------------------------------------------------------------------------- reuse


def test_sequential_calls_share_one_connection() -> None:
    async def main() -> None:
        async with tornado_server() as (url, record), client() as upstream:
            for i in range(6):
                assert await upstream.get_json(url + "/json") == {"ok": True, "n": i + 1}
            assert (await upstream.post_json(url + "/json", form={"a": "b c"}))["form"] == "b c"
        assert len(record.ports) == 7 and record.distinct() == 1, record.ports
        assert set(record.accept_encoding) == {"gzip"}
        assert set(record.connection_header) == {"keep-alive"}
        assert record.bodies[-1] == b"a=b+c"
        assert upstream.pool.stats.opened == 1 and upstream.pool.stats.reused == 6

    run(main)


def test_concurrent_calls_each_get_their_own_connection_then_reuse_them() -> None:
    async def main() -> None:
        async with tornado_server() as (url, record), client() as upstream:
            for _ in range(2):  # the gate answers only when all 6 are in at once: 6 connections
                record.gate_count, record.gate_size = 0, 6
                record.gate_open.clear()
                results = await asyncio.gather(*(upstream.get_json(url + "/gate") for _ in range(6)))
                assert results == [{"ok": True}] * 6
        assert len(record.ports) == 12
        assert len(set(record.ports[:6])) == 6, "two calls shared a connection at once"
        assert set(record.ports[6:]) == set(record.ports[:6]), "the second round did not reuse the first's"

    run(main)


def test_max_clients_queues_calls_instead_of_opening_more() -> None:
    async def main() -> None:
        async with tornado_server() as (url, record), client(max_clients=2) as upstream:
            record.gate_size = 10**6  # answer only when the test says so
            calls = [asyncio.ensure_future(upstream.get_json(url + "/gate")) for _ in range(5)]
            while record.gate_count < 2:
                record.arrived.clear()
                await asyncio.wait_for(record.arrived.wait(), TIMEOUT)
            assert record.gate_count == 2 and len(upstream.pool._waiters) == 3
            record.gate_open.set()
            assert await asyncio.gather(*calls) == [{"ok": True}] * 5
        assert len(record.ports) == 5 and record.distinct() == 2, record.ports

    run(main)


# ------------------------------------------------------------- answers that end the reuse


def test_a_connection_close_answer_is_not_reused() -> None:
    async def main() -> None:
        async with tornado_server() as (url, record), client() as upstream:
            assert await upstream.get_json(url + "/close") == {"ok": True}
            assert await upstream.get_json(url + "/json") == {"ok": True, "n": 2}
            assert await upstream.get_json(url + "/json") == {"ok": True, "n": 3}
        assert record.ports[0] != record.ports[1] == record.ports[2]

    run(main)


@pytest.mark.parametrize(
    ("first", "reusable"),
    [
        (answer(version="1.0"), False),  # HTTP/1.0 without keep-alive: the connection ends here
        (answer(version="1.0", extra="Connection: keep-alive\r\n"), True),
        (answer(extra="Connection: Keep-Alive, close\r\n"), False),
        (answer(length=False) + RawServer.CLOSE, False),  # no length: read to the close, never pooled
        (
            answer(
                extra="Transfer-Encoding: chunked\r\n",
                length=False,
                body=b'5\r\n{"a":\r\n2\r\n1}\r\n0\r\n\r\n',
            ),
            True,
        ),
    ],
    ids=["http10", "http10-keep-alive", "close-token", "no-length", "chunked"],
)
def test_reuse_follows_the_answers_framing_and_connection_header(first: bytes, reusable: bool) -> None:
    async def behave(index: int, number: int) -> bytes:
        return first if (index, number) == (0, 1) else answer()

    async def main() -> None:
        async with raw_server(behave) as server, client() as upstream:
            body = await upstream.request("GET", server.url + "/first")
            assert body.json() in ({"ok": True}, {"a": 1})
            assert await upstream.get_json(server.url + "/second") == {"ok": True}
        assert server.requests == ([2] if reusable else [1, 1])

    run(main)


def test_bytes_after_an_answer_mean_the_connection_is_not_reused() -> None:
    async def behave(index: int, number: int) -> bytes:
        if (index, number) == (0, 1):  # one answer, then the start of another nobody asked for
            return answer() + answer(b'{"smuggled": true}')
        return answer()

    async def main() -> None:
        async with raw_server(behave) as server, client() as upstream:
            assert await upstream.get_json(server.url + "/a") == {"ok": True}
            assert await upstream.get_json(server.url + "/b") == {"ok": True}
        assert server.requests == [1, 1]

    run(main)


# ------------------------------------------------------------------ stale connections


def test_a_connection_the_server_closed_while_idle_is_not_used() -> None:
    async def main() -> None:
        async with raw_server(ok) as server, client() as upstream:
            assert await upstream.get_json(server.url + "/a") == {"ok": True}
            await server.close_connections()
            assert await upstream.get_json(server.url + "/b") == {"ok": True}
        assert server.requests == [1, 1]
        assert upstream.pool.stats.opened == 2 and upstream.pool.stats.retried == 0

    run(main)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_a_reused_connection_closed_before_any_answer_byte_is_retried_once_on_a_new_one(
    tls: bool, tmp_path: Path
) -> None:
    ca_file, server_context = make_certificates(tmp_path) if tls else (None, None)
    client_context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None

    async def behave(index: int, number: int) -> bytes | None:
        return answer() if number == 1 else None  # the close races the second request: no answer at all

    async def main() -> None:
        async with (
            raw_server(behave, server_context) as server,
            client(ssl_context=client_context) as upstream,
        ):
            assert await upstream.get_json(server.url + "/a") == {"ok": True}
            assert await upstream.post_json(server.url + "/b", form={"x": "y"}) == {"ok": True}
        assert server.requests == [2, 1]
        assert upstream.pool.stats.retried == 1

    run(main)


def test_a_fresh_connection_closed_without_an_answer_is_not_retried() -> None:
    async def main() -> None:
        async with raw_server(hang_up) as server, client() as upstream:
            with pytest.raises(ProviderError):
                await upstream.get_json(server.url + "/a")
        assert server.requests == [1]

    run(main)


def test_no_retry_once_answer_bytes_arrived() -> None:
    async def behave(index: int, number: int) -> bytes:
        if number == 1:
            return answer()
        return b"HTTP/1.1 200 OK\r\nContent-Ty" + RawServer.CLOSE  # part of the head, then the close

    async def main() -> None:
        async with raw_server(behave) as server, client() as upstream:
            assert await upstream.get_json(server.url + "/a") == {"ok": True}
            with pytest.raises(ProviderError):
                await upstream.get_json(server.url + "/b")
        assert server.requests == [2], "the call was sent again after answer bytes arrived"

    run(main)


def test_a_body_cut_short_is_an_error_not_a_retry() -> None:
    async def behave(index: int, number: int) -> bytes:
        if number == 1:
            return answer()
        return answer(b'{"ok": true}')[:-3] + RawServer.CLOSE

    async def main() -> None:
        async with raw_server(behave) as server, client() as upstream:
            assert await upstream.get_json(server.url + "/a") == {"ok": True}
            with pytest.raises(ProviderError):
                await upstream.get_json(server.url + "/b")
        assert server.requests == [2]

    run(main)


# ---------------------------------------------------------------- caps, timeouts, errors


@pytest.mark.parametrize("path", ["/big", "/big-chunked", "/bomb"])
def test_an_oversized_answer_is_a_provider_error_and_drops_the_connection(path: str) -> None:
    async def main() -> None:
        async with tornado_server() as (url, record), client() as upstream:
            assert await upstream.get_json(url + "/json") == {"ok": True, "n": 1}
            with pytest.raises(ProviderError) as caught:
                await upstream.request("GET", url + path)
            assert "response" not in caught.value.data
            assert await upstream.get_json(url + "/json") == {"ok": True, "n": 3}
        assert record.ports[0] == record.ports[1] != record.ports[2]

    run(main)


def test_an_oversized_header_is_a_provider_error() -> None:
    async def behave(index: int, number: int) -> bytes:
        return answer(extra="X-Filler: " + "a" * 70_000 + "\r\n")

    async def main() -> None:
        async with raw_server(behave) as server, client() as upstream:
            with pytest.raises(ProviderError):
                await upstream.get_json(server.url + "/a")

    run(main)


def test_a_slow_server_ends_in_the_timeout_and_its_connection_is_not_reused() -> None:
    timeout = 0.4

    async def main() -> None:
        async with tornado_server() as (url, record), client(timeout) as upstream:
            assert await upstream.get_json(url + "/json") == {"ok": True, "n": 1}
            started = time.monotonic()
            with pytest.raises(ProviderError):
                await upstream.get_json(url + "/slow")
            took = time.monotonic() - started
            assert timeout * 0.9 <= took < timeout + 1.0, took
            record.release.set()
            assert await upstream.get_json(url + "/json") == {"ok": True, "n": 3}
        assert record.ports[0] == record.ports[1] != record.ports[2]
        assert upstream.pool.stats.retried == 0

    run(main)


def test_gzip_answers_are_decoded() -> None:
    async def main() -> None:
        async with tornado_server() as (url, record), client() as upstream:
            response = await upstream.request("GET", url + "/gzip")
            assert response.json() == {"zipped": "yes " * 50}
            assert "Content-Encoding" not in response.headers
            assert await upstream.get_json(url + "/json") == {"ok": True, "n": 2}
        assert record.distinct() == 1

    run(main)


def test_a_non_2xx_answer_raises_with_the_response_and_keeps_the_connection() -> None:
    async def main() -> None:
        async with tornado_server() as (url, record), client() as upstream:
            with pytest.raises(ProviderError) as caught:
                await upstream.get_json(url + "/missing?access_token=secret-token")
            response = caught.value.data["response"]
            assert response.status == 404
            assert response.json() == {"error": {"code": 803, "message": "Unknown path"}}
            assert "secret-token" not in str(caught.value)
            assert await upstream.get_json(url + "/json") == {"ok": True, "n": 2}
            assert (await upstream.request("GET", url + "/missing", ok_statuses=[404])).status == 404
        assert record.distinct() == 1

    run(main)


def test_failures_log_no_query_string(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with raw_server(hang_up) as server, client() as upstream:
            with pytest.raises(ProviderError):
                await upstream.get_json(server.url + "/token?code=the-secret-code")

    caplog.set_level("DEBUG")
    run(main)
    assert "upstream call failed" in caplog.text
    assert "the-secret-code" not in caplog.text


# ---------------------------------------------------------------------- pool lifecycle


def test_idle_connections_are_closed_after_the_idle_timeout() -> None:
    async def main() -> None:
        async with raw_server(ok) as server, client(pool=HTTPPool(idle_timeout=0.2)) as upstream:
            assert await upstream.get_json(server.url + "/a") == {"ok": True}
            await asyncio.wait_for(server.client_closed[0].wait(), TIMEOUT)
            assert upstream.pool.idle_count() == 0
            assert await upstream.get_json(server.url + "/b") == {"ok": True}
        assert server.requests == [1, 1]

    run(main)


def test_idle_connections_per_host_are_capped() -> None:
    async def main() -> None:
        async with tornado_server() as (url, record), client(pool=HTTPPool(max_idle_per_host=2)) as upstream:
            record.gate_size = 4
            assert await asyncio.gather(*(upstream.get_json(url + "/gate") for _ in range(4)))
            assert upstream.pool.idle_count() == 2
            assert await upstream.get_json(url + "/json")
        assert record.distinct() == 4 and record.ports[-1] in record.ports[:4]

    run(main)


def test_close_closes_every_connection_without_resource_warnings() -> None:
    async def main() -> None:
        async with raw_server(ok) as server:
            upstream = Upstream(TIMEOUT)
            results = await asyncio.gather(*(upstream.get_json(server.url + "/a") for _ in range(3)))
            assert results == [{"ok": True}] * 3
            assert upstream.pool.idle_count() == 3
            upstream.close()
            for closed in server.client_closed:  # the server sees each connection end
                await asyncio.wait_for(closed.wait(), TIMEOUT)
            with pytest.raises(ProviderError):
                await upstream.get_json(server.url + "/a")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(main)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [
        str(w.message) for w in caught
    ]


def test_one_upstream_used_from_two_loops_does_not_reuse_the_first_loops_connections() -> None:
    record = Record()
    server = ServerThread(lambda: make_app(record)).start()
    upstream = Upstream(TIMEOUT)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert asyncio.run(upstream.get_json(server.url + "/json")) == {"ok": True, "n": 1}
            assert asyncio.run(upstream.get_json(server.url + "/json")) == {"ok": True, "n": 2}

            async def close() -> None:
                upstream.close()

            asyncio.run(close())
            gc.collect()
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    finally:
        server.stop()
    assert record.distinct() == 2


# ------------------------------------------------------------------------------- TLS


def make_certificates(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A test CA and a certificate for 127.0.0.1 signed by it: the CA file and the server's context."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "linkd test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file = directory / "server.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file = directory / "server.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_file, key_file)
    return ca_file, server_context


def test_tls_verifies_the_certificate_by_default_and_trusts_a_given_ca(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca_file, server_context = make_certificates(tmp_path)

    async def main() -> None:
        async with tornado_server(server_context) as (url, record):
            async with client() as default:
                with pytest.raises(ProviderError):  # self-signed CA: not in the system's store
                    await default.get_json(url + "/json")
            assert record.ports == []

            async with client(ssl_context=ssl.create_default_context(cafile=str(ca_file))) as trusting:
                for i in range(3):
                    assert await trusting.get_json(url + "/json") == {"ok": True, "n": i + 1}
                with pytest.raises(ProviderError):  # the certificate names 127.0.0.1, not localhost
                    await trusting.get_json(url.replace("127.0.0.1", "localhost") + "/json")
            assert len(record.ports) == 3 and record.distinct() == 1
            assert trusting.pool.stats.opened == 1

    run(main)
    failures = [r.getMessage() for r in caplog.records if r.name == "linkd.upstream"]
    assert len(failures) == 2 and all("SSLCertVerificationError" in f for f in failures), failures
    assert "unable to get local issuer certificate" in caplog.text and "Hostname mismatch" in caplog.text


def test_a_context_that_does_not_verify_is_refused() -> None:
    lax = ssl.create_default_context()
    lax.check_hostname = False
    lax.verify_mode = ssl.CERT_NONE
    with pytest.raises(ValueError):
        Upstream(TIMEOUT, ssl_context=lax)
    no_hostname = ssl.create_default_context()
    no_hostname.check_hostname = False
    with pytest.raises(ValueError):
        HTTPPool(ssl_context=no_hostname)


def test_a_header_with_a_line_break_or_an_odd_scheme_is_refused_before_sending() -> None:
    async def main() -> None:
        async with raw_server(ok) as server, client() as upstream:
            with pytest.raises(ProviderError):
                await upstream.get_json(server.url + "/a", headers={"X-Id": "1\r\nX-Injected: yes"})
            with pytest.raises(ProviderError):
                await upstream.get_json(server.url.replace("http", "ftp") + "/a")
            assert await upstream.get_json(server.url + "/a") == {"ok": True}
        assert server.requests == [1]

    run(main)
