"""HTTP/1.1 over a raw socket: the request goes out byte for byte as the test wrote it.

Clients such as urllib or http.client refuse or quietly repair what a hostile test wants
to send (control characters, invalid UTF-8, CR/LF inside a header, raw bytes in the
request line); here nothing is normalised. The response is read until the server
closes the connection (`Connection: close` is sent first, before any hostile header).
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass, field


@dataclass
class RawResponse:
    status: int | None  # None: the server closed the connection without answering
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    raw: bytes = b""
    after: bytes = b""  # what followed the first response (a hostile header may split the request in two)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


def send(
    port: int,
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    body: bytes = b"",
    *,
    host: bytes | None = None,
    timeout: float = 15.0,
) -> RawResponse:
    head = [
        method + b" " + target + b" HTTP/1.1",
        b"Host: " + (host if host is not None else b"127.0.0.1:%d" % port),
        b"Connection: close",
        b"Content-Length: %d" % len(body),
        *(name + b": " + value for name, value in headers),
    ]
    request = b"\r\n".join(head) + b"\r\n\r\n" + body
    chunks: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # the server may answer (or give up) before reading everything: then read what it said
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        with contextlib.suppress(ConnectionResetError):
            while data := sock.recv(65536):
                chunks.append(data)
    return parse(b"".join(chunks))


def parse(raw: bytes) -> RawResponse:
    if not raw:
        return RawResponse(None)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise AssertionError(f"not an HTTP response: {raw[:200]!r}")
    headers = []
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    response = RawResponse(int(parts[1]), headers, body, raw)
    length = response.header("Content-Length")
    if length is not None and length.isdigit():
        response.body, response.after = body[: int(length)], body[int(length) :]
    return response
