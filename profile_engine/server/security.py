"""Who may ask: a token on every request when one is set, and loopback names only without one.

- With a token (required to listen beyond loopback), every request but the login page and
  static assets must carry it: ``Authorization: Bearer <token>`` (API, metrics, the CLI) or the
  cookie the login page sets (browsers). Compared in constant time.
- Without a token the server listens on loopback only, and refuses a ``Host`` header that
  is not a loopback name, so a web page elsewhere cannot reach it by rebinding its own DNS
  name to 127.0.0.1.
- A request another site's page made a browser send is refused unless it only reads (a
  form posted to ``/sql``, a settings change): the browser names where it comes from
  (``Sec-Fetch-Site``, ``Origin``), and a loopback server is as reachable from any page the
  operator opens as from its own. A link from elsewhere still opens a page (see
  ``is_cross_site``: ``/sql?q=`` then shows the query without running it). No page may be
  framed by another.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from http.cookies import SimpleCookie
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "profile_engine_token"
TOKEN_ENV = "PROFILE_ENGINE_TOKEN"
OPEN_PREFIXES = ("/static/", "/login")
LOOPBACK_NAMES = ("localhost", "localhost.")


def is_loopback(host: str) -> bool:
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """The name part of a Host header: ``[::1]:8321`` -> ``::1``, ``a:80`` -> ``a``."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def token_matches(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Sent with every answer: no framing by other pages, no content sniffing, no full URLs (a
# query in /sql?q=) in the Referer of links followed elsewhere.
SECURITY_HEADERS = (
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


def is_cross_site(headers: dict[str, str]) -> bool:
    """Whether a browser says another origin's page sent this request (another port on the
    same host is another origin; a typed URL or a bookmark is ``none``)."""
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return True
    origin = headers.get("origin")
    if origin is None:
        return False
    _, _, authority = origin.partition("://")
    return authority.lower() != headers.get("host", "").lower()


class AccessGuard:
    """ASGI middleware enforcing the rules above."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path: str = scope["path"]
        if self.token is None:
            if not is_loopback(_host_name(headers.get("host", ""))):
                await _refuse(send, 403, "this server answers loopback host names only")
                return
        elif not path.startswith(OPEN_PREFIXES) and not self._authorised(headers):
            if _wants_html(path, headers):
                query = scope.get("query_string", b"").decode("latin-1")
                back = path + (f"?{query}" if query else "")
                await _redirect(send, "/login?next=" + quote(back, safe="/"))
            else:
                await _refuse(send, 401, "a valid token is required (Authorization: Bearer)")
            return
        if scope["method"] not in SAFE_METHODS and is_cross_site(headers):
            await _refuse(send, 403, "a page of another site cannot send this request here")
            return

        if scope["method"] == "HEAD":
            # Answered as GET (uptime checks ask HEAD); the HTTP server sends no body for it.
            scope = {**scope, "method": "GET"}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _authorised(self, headers: dict[str, str]) -> bool:
        assert self.token is not None
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token_matches(self.token, credentials.strip()):
            return True
        cookie = SimpleCookie(headers.get("cookie", ""))
        morsel = cookie.get(COOKIE)
        return morsel is not None and token_matches(self.token, morsel.value)


def _wants_html(path: str, headers: dict[str, str]) -> bool:
    api = path.startswith("/api/") or path in ("/metrics", "/openapi.json")
    return not api and "text/html" in headers.get("accept", "")


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message, "kind": "bad_input"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="profile-engine"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: str) -> None:
    headers = [(b"location", location.encode("latin-1")), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
