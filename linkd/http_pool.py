"""A small keep-alive HTTP/1.1 client pool built on Tornado's own connection code.

Tornado's `simple_httpclient` opens a new TCP (and TLS) connection for every call and
sends `Connection: close`; linkd talks to a handful of platform hosts over and over, so
a handshake per call is most of a provider call's CPU. This pool keeps idle connections
per (scheme, host, port) and speaks HTTP/1.1 through `HTTP1Connection` in client mode.

Rules it keeps: a connection carries one request at a time; it goes back to the pool only
after a complete, length-delimited answer that allows keep-alive, with nothing left unread;
a call that times out closes its connection; a call that fails on a *reused* connection
before any byte of the answer arrived (the platform closed it while it was idle) is sent
once more on a fresh connection, and never otherwise. TLS always verifies the certificate
and the host name. Nothing here logs or raises a message holding a URL, header or body.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import re
import select
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.iostream import IOStream, StreamClosedError
from tornado.netutil import Resolver
from tornado.tcpclient import TCPClient

DEFAULT_MAX_BODY = 2 * 1024 * 1024
_LINE_BREAK = re.compile(r"[\r\n]")
_Key = tuple[str, str, int]


class PoolError(Exception):
    """A call that got no usable answer. `reason` is short and safe to log (no URL, no data)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PoolTimeout(PoolError):
    """The call did not finish within its timeout."""


class BodyTooLarge(PoolError):
    """The answer's body (after decompression) is over the pool's cap."""


class _Stale(PoolError):
    """The connection was closed before any byte of the answer arrived: safe to send again."""


@dataclass
class PoolResponse:
    status: int
    reason: str
    headers: httputil.HTTPHeaders
    body: bytes
    reused: bool  # the answer came over a connection that had served a call before


@dataclass
class PoolStats:
    opened: int = 0  # connections opened
    reused: int = 0  # calls sent over a pooled connection
    retried: int = 0  # calls sent again after a stale pooled connection


class _Conn:
    __slots__ = ("idle_since", "key", "stream", "timed_out")

    def __init__(self, key: _Key, stream: IOStream) -> None:
        self.key = key
        self.stream = stream
        self.idle_since = 0.0
        self.timed_out = False

    def expire(self) -> None:
        self.timed_out = True
        self.stream.close()


class _Reader(httputil.HTTPMessageDelegate):
    """Collects one answer; never raises (HTTP1Connection would log a traceback if it did)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.start: httputil.ResponseStartLine | None = None
        self.headers: httputil.HTTPHeaders | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.too_large = False
        self.done = False

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> None:
        assert isinstance(start_line, httputil.ResponseStartLine)
        self.start = start_line
        self.headers = headers
        length = headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.limit:
            self.too_large = True  # HTTP1Connection refuses it next; this only names the reason

    def data_received(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self.too_large = True
        else:
            self.chunks.append(chunk)

    def finish(self) -> None:
        self.done = True

    def on_connection_close(self) -> None:
        pass


def _buffered(stream: IOStream) -> int:
    """Bytes read from the socket but not consumed (IOStream keeps them after a close too)."""
    return int(getattr(stream, "_read_buffer_size", 0))


def _peer_spoke(stream: IOStream) -> bool:
    """True if an idle connection is readable: the peer closed it (or sent bytes it should not have)."""
    sock = stream.socket
    if sock is None:
        return True
    try:
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _tokens(value: str | None) -> set[str]:
    return {t.strip().lower() for t in (value or "").split(",") if t.strip()}


def _keeps_alive(method: str, start: httputil.ResponseStartLine, headers: httputil.HTTPHeaders) -> bool:
    """May the connection carry another call? Only if the answer allowed it and had a length."""
    connection = _tokens(headers.get("Connection"))
    if "close" in connection:
        return False
    if start.version == "HTTP/1.0":
        if "keep-alive" not in connection:
            return False
    elif start.version != "HTTP/1.1":
        return False
    if method == "HEAD" or start.code in (204, 304) or 100 <= start.code < 200:
        return True
    return "Content-Length" in headers or "chunked" in _tokens(headers.get("Transfer-Encoding"))


def _benign_close(error: BaseException | None) -> bool:
    """A StreamClosedError from a plain EOF or reset (a stale connection), not a TLS or framing failure."""
    if not isinstance(error, StreamClosedError):
        return False
    real = error.real_error
    closes = (
        ConnectionResetError,
        BrokenPipeError,
        ConnectionAbortedError,
        ssl.SSLEOFError,
        ssl.SSLZeroReturnError,
    )
    return real is None or isinstance(real, closes)


def verified_context(context: ssl.SSLContext | None = None) -> ssl.SSLContext:
    """The TLS context for https: the system's CAs, certificate and host name checked (SNI is sent).

    A caller (a test) may bring its own context, e.g. one that trusts a test CA; one that
    does not verify is refused, so there is no way to turn verification off.
    """
    if context is None:
        return ssl.create_default_context()
    if context.verify_mode != ssl.CERT_REQUIRED or not context.check_hostname:
        raise ValueError("the TLS context must verify certificates and host names")
    return context


class HTTPPool:
    """Keep-alive connections per (scheme, host, port), for one event loop at a time.

    Create it lazily (not at import) in the loop that uses it; `close()` closes every
    connection, idle or busy. If it is used from another loop later, the idle connections
    of the old loop are closed first rather than reused.
    """

    def __init__(
        self,
        *,
        max_idle_per_host: int = 16,
        idle_timeout: float = 30.0,
        max_connections: int = 256,
        max_body_size: int = DEFAULT_MAX_BODY,
        max_header_size: int = 64 * 1024,
        ssl_context: ssl.SSLContext | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.max_idle_per_host = max_idle_per_host
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_body_size = max_body_size
        self._ssl_context = verified_context(ssl_context) if ssl_context is not None else None
        self._tcp = TCPClient(resolver=resolver)
        self._params = HTTP1ConnectionParameters(
            no_keep_alive=False,
            max_header_size=max_header_size,
            max_body_size=max_body_size,
            decompress=True,
        )
        self._idle: dict[_Key, collections.deque[_Conn]] = {}
        self._busy: set[_Conn] = set()
        self._active = 0  # calls holding a slot (max_connections)
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self.stats = PoolStats()

    # ----------------------------------------------------------------- the call

    async def fetch(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        timeout: float,
    ) -> PoolResponse:
        """Send one request and read its whole answer within `timeout` seconds (connect included).

        Raises PoolError (PoolTimeout, BodyTooLarge) when there is no usable answer; any
        status code is an answer. Redirects are not followed.
        """
        if self._closed:
            raise PoolError("pool closed")
        loop = self._bind()
        deadline = loop.time() + timeout
        key, target, request_headers = self._prepare(method, url, headers, body)
        await self._acquire(loop, deadline)
        try:
            conn = self._checkout(key, loop.time())
            if conn is None:
                conn = await self._connect(key, deadline)
                return await self._exchange(conn, method, target, request_headers, body, deadline, False)
            self.stats.reused += 1
            try:
                return await self._exchange(conn, method, target, request_headers, body, deadline, True)
            except _Stale:
                self.stats.retried += 1
            conn = await self._connect(key, deadline)
            return await self._exchange(conn, method, target, request_headers, body, deadline, False)
        finally:
            self._release()

    def _prepare(
        self, method: str, url: str, headers: Mapping[str, str] | None, body: bytes | None
    ) -> tuple[_Key, str, httputil.HTTPHeaders]:
        parsed = urllib.parse.urlsplit(url)
        scheme = parsed.scheme.lower()
        if scheme not in ("http", "https"):
            raise PoolError("unsupported scheme")
        netloc = parsed.netloc.rpartition("@")[2]
        host, port = httputil.split_host_and_port(netloc)
        if not host:
            raise PoolError("no host")
        if port is None:
            port = 443 if scheme == "https" else 80
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        out = httputil.HTTPHeaders()
        for name, value in (headers or {}).items():
            if _LINE_BREAK.search(name) or _LINE_BREAK.search(value):
                raise PoolError("invalid request header")  # refused before any connection is made
            out[name] = value
        if "Host" not in out:
            out["Host"] = netloc
        if "Connection" not in out:
            out["Connection"] = "keep-alive"
        if parsed.username is not None:  # as simple_httpclient did: user:pass@ in the URL is basic auth
            pair = httputil.encode_username_password(parsed.username, parsed.password or "")
            out["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        out["Accept-Encoding"] = "gzip"
        if body is not None:
            out["Content-Length"] = str(len(body))
        elif method in ("POST", "PUT", "PATCH"):
            out["Content-Length"] = "0"
        if method == "POST" and "Content-Type" not in out:
            out["Content-Type"] = "application/x-www-form-urlencoded"
        target = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        return (scheme, host.lower(), port), target, out

    async def _connect(self, key: _Key, deadline: float) -> _Conn:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise PoolTimeout("timeout")
        ssl_options = None
        if scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = verified_context()
            ssl_options = self._ssl_context
        try:
            stream = await self._tcp.connect(host, port, ssl_options=ssl_options, timeout=remaining)
        except TimeoutError:
            raise PoolTimeout("connect timeout") from None
        except Exception as exc:  # refused, unreachable, DNS, TLS verification...
            raise PoolError(f"connect failed: {type(exc).__name__}") from None
        self.stats.opened += 1
        conn = _Conn(key, stream)
        if self._closed:
            stream.close()
            raise PoolError("pool closed")
        stream.set_nodelay(True)
        return conn

    async def _exchange(
        self,
        conn: _Conn,
        method: str,
        target: str,
        headers: httputil.HTTPHeaders,
        body: bytes | None,
        deadline: float,
        reused: bool,
    ) -> PoolResponse:
        loop = asyncio.get_running_loop()
        stream = conn.stream
        self._busy.add(conn)
        reader = _Reader(self.max_body_size)
        http = HTTP1Connection(stream, True, self._params, f"{conn.key[1]}:{conn.key[2]}")
        timer = loop.call_at(deadline, conn.expire)
        error: BaseException | None = None
        kept = False
        try:
            try:
                start = httputil.RequestStartLine(method, target, "HTTP/1.1")
                http.write_headers(start, headers, body or None)  # one write: no Nagle wait for the body
                http.finish()
                await http.read_response(reader)
            except (StreamClosedError, httputil.HTTPInputError, httputil.HTTPOutputError, OSError) as exc:
                error = exc
            except ValueError:  # a header with CR or LF: refused before anything was written
                raise PoolError("invalid request header") from None
            finally:
                timer.cancel()
            if conn.timed_out:
                raise PoolTimeout("timeout")
            if not reader.done or reader.start is None or reader.headers is None:
                if (
                    reused
                    and reader.start is None
                    and _benign_close(error)
                    and _buffered(stream) == 0
                    and not self._closed
                ):
                    raise _Stale("stale connection")
                if reader.too_large:
                    raise BodyTooLarge("body too large")
                raise PoolError(f"no complete answer: {type(error).__name__ if error else 'closed'}")
            if reader.too_large:
                raise BodyTooLarge("body too large")
            response = PoolResponse(
                reader.start.code, reader.start.reason, reader.headers, b"".join(reader.chunks), reused
            )
            if (
                "close" not in _tokens(headers.get("Connection"))
                and _keeps_alive(method, reader.start, reader.headers)
                and not stream.closed()
                and _buffered(stream) == 0
            ):
                http.detach()
                kept = self._checkin(conn, loop)
            return response
        finally:
            self._busy.discard(conn)
            if not kept:
                stream.close()

    # ------------------------------------------------------------ idle connections

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._drop_idle()  # connections of another (likely closed) loop are never reused
            if self._sweeper is not None:
                self._sweeper.cancel()
                self._sweeper = None
            self._loop = loop
            self._active = 0
            self._waiters.clear()
        return loop

    def _checkout(self, key: _Key, now: float) -> _Conn | None:
        queue = self._idle.get(key)
        while queue:
            conn = queue.pop()  # the most recently used: the least likely to have been closed
            if self._still_good(conn, now):
                return conn
            conn.stream.close()
        return None

    def _still_good(self, conn: _Conn, now: float) -> bool:
        """Open, not idle too long, and nothing to read (a readable idle socket was closed by the peer)."""
        return (
            not conn.stream.closed()
            and now - conn.idle_since <= self.idle_timeout
            and not _peer_spoke(conn.stream)
        )

    def _checkin(self, conn: _Conn, loop: asyncio.AbstractEventLoop) -> bool:
        if self._closed or self.max_idle_per_host <= 0 or loop is not self._loop:
            return False
        conn.idle_since = loop.time()
        queue = self._idle.setdefault(conn.key, collections.deque())
        queue.append(conn)
        while len(queue) > self.max_idle_per_host:
            queue.popleft().stream.close()
        if self._sweeper is None:
            self._sweeper = loop.call_later(max(self.idle_timeout / 2, 0.01), self._sweep)
        return True

    def _sweep(self) -> None:
        """Close connections idle too long or closed by the peer; runs only while some are idle."""
        self._sweeper = None
        if self._loop is None or self._closed:
            return
        now = self._loop.time()
        for key in list(self._idle):
            alive: collections.deque[_Conn] = collections.deque()
            for conn in self._idle[key]:
                if self._still_good(conn, now):
                    alive.append(conn)
                else:
                    conn.stream.close()
            if alive:
                self._idle[key] = alive
            else:
                del self._idle[key]
        if self._idle:
            self._sweeper = self._loop.call_later(max(self.idle_timeout / 2, 0.01), self._sweep)

    def _drop_idle(self) -> None:
        for queue in self._idle.values():
            for conn in queue:
                conn.stream.close()
        self._idle.clear()

    def idle_count(self) -> int:
        return sum(len(q) for q in self._idle.values())

    # ---------------------------------------------------------- concurrency slots

    async def _acquire(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        if self._active < self.max_connections and not self._waiters:
            self._active += 1
            return
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)

        def expire() -> None:
            if not waiter.done():
                waiter.set_exception(PoolTimeout("timeout waiting for a connection"))

        timer = loop.call_at(deadline, expire)
        try:
            await waiter  # resolved by _release, which hands its slot over
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release()  # the slot reached us as we were cancelled: pass it on
            raise
        finally:
            timer.cancel()

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._active = max(0, self._active - 1)

    # ------------------------------------------------------------------- close

    def close(self) -> None:
        """Close every connection, idle or in the middle of a call (that call then fails)."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._drop_idle()
        for conn in list(self._busy):
            conn.stream.close()
        self._busy.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolError("pool closed"))
        self._tcp.close()
