"""What the stack allows on this machine: bare Tornado servers, measured in the same run as linkd.

- `hello`:    `GET /` answers 200 "Hello, world" (Tornado's own minimal app).
- `redirect`: `GET /facebook/login` answers 302 to a URL carrying a fresh random value and
  its HMAC-SHA256: the least a login can do (no session, no database), so linkd's login
  rate divided by this one says how much of the stack's budget linkd spends on its work.

Run: `python bench/ceiling_server.py hello|redirect --port PORT` (one process, like linkd's worker).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import secrets

import tornado.web
from serving import serve_until_stopped

KEY = secrets.token_bytes(32)


class Hello(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("Hello, world")


class SignedRedirect(tornado.web.RequestHandler):
    def get(self) -> None:
        value = secrets.token_urlsafe(32)
        mac = hmac.new(KEY, value.encode(), hashlib.sha256).digest()
        sig = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
        self.redirect(f"https://platform.invalid/dialog/oauth?client_id=1&state={value}.{sig}")


async def main() -> None:
    parser = argparse.ArgumentParser(description="bare Tornado servers for the benchmark's ceilings")
    parser.add_argument("kind", choices=["hello", "redirect"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    routes = [(r"/", Hello), (r"/healthz", Hello), (r"/facebook/login", SignedRedirect)]
    await serve_until_stopped(tornado.web.Application(routes), args.port)


if __name__ == "__main__":
    asyncio.run(main())
