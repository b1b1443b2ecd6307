"""The review page's security layer: token, Host, Origin and body-size checks in front of the app.

A plain ASGI wrapper, so it guards every route, static files included (the rules are in
:mod:`biolingual.agile.app`'s docstring).
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlencode

from starlette.responses import PlainTextResponse, RedirectResponse, Response

TOKEN_HEADER = "x-biolingual-token"
TOKEN_COOKIE = "biolingual_token"


def _hostname(host_header: str) -> str:
    """'127.0.0.1:8765' -> '127.0.0.1', '[::1]:8765' -> '::1', 'localhost' -> 'localhost'."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _foreign_write(headers: dict, host: str) -> str | None:
    """Why a state-changing request did not come from the page itself, or None when nothing says it did not.

    ``Origin`` must be this page's own (http or https, the ``Host`` it was sent to). ``Origin: null`` is refused
    too: browsers send it from sandboxed iframes, ``file:`` pages and data: URLs, i.e. from any page that wants
    to hide where it is, so it proves nothing. A request without ``Origin`` (curl, scripts, the tests) passes,
    unless the browser's ``Sec-Fetch-Site`` says it came from another site."""
    origin = headers.get("origin")
    if origin is not None:
        scheme, sep, rest = origin.strip().partition("://")
        if not sep or scheme.lower() not in ("http", "https") or rest.lower() != host.strip().lower():
            return f"Origin {origin[:100]!r} is not this page's"
    site = headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in ("same-origin", "none"):
        return f"Sec-Fetch-Site {site[:40]!r}"
    return None


class Guard:
    """Token, Host, Origin and body-size checks in front of ``app`` (see the module docstring)."""

    def __init__(self, app, token: str | None, allowed_hosts: tuple[str, ...] | None, max_body: int):
        self.app = app
        self.token = token
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] != "http":  # the page uses no websockets: none is let past the checks below
            return await send({"type": "websocket.close", "code": 1008})
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            return await refusal(scope, receive, send)
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await self._too_large()(scope, receive, send)
        received = 0
        started = refused = False

        async def counted_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body and not started:  # a chunked body with no length announced
                    # answer 413 here, and tell the app the client left: raising instead would reach the
                    # app's form parser, which turns any error into its own 400
                    refused = True
                    await self._too_large()(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message):
            nonlocal started
            if refused:
                return  # the 413 is the answer
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted_receive, tracked_send)

    def _too_large(self) -> Response:
        return PlainTextResponse(f"request body over the limit of {self.max_body / 2**20:g} MB", status_code=413)

    def _refusal(self, scope, headers: dict) -> Response | None:
        host = headers.get("host", "")
        if self.allowed_hosts is not None and _hostname(host) not in self.allowed_hosts:
            names = ", ".join(sorted(self.allowed_hosts))
            return PlainTextResponse(f"this page answers only at {names}", status_code=400)
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            foreign = _foreign_write(headers, host)
            if foreign is not None:
                return PlainTextResponse(f"cross-origin writes are refused ({foreign})", status_code=403)
        if not self.token:
            return None
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if "token" in query and scope["method"] in ("GET", "HEAD"):
            if not hmac.compare_digest(query["token"][0].encode(), self.token.encode()):
                return PlainTextResponse("wrong token", status_code=403)
            # first visit with ?token=: keep it in a cookie and drop it from the address bar and history
            rest = {k: v for k, v in query.items() if k != "token"}
            target = scope["path"] + ("?" + urlencode(rest, doseq=True) if rest else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict", path="/")
            return response
        given = headers.get(TOKEN_HEADER)
        if given is None and headers.get("authorization", "").lower().startswith("bearer "):
            given = headers["authorization"][7:].strip()
        if given is None and "cookie" in headers:
            cookie = SimpleCookie()
            try:
                cookie.load(headers["cookie"])
            except Exception:  # a malformed cookie header is the same as none
                cookie = SimpleCookie()
            if TOKEN_COOKIE in cookie:
                given = cookie[TOKEN_COOKIE].value
        if given is None:
            return PlainTextResponse(
                "this page needs its token: open the address `biolingual review` printed "
                "(it ends in ?token=...), or send the X-BioLingual-Token header",
                status_code=401,
            )
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return PlainTextResponse("wrong token", status_code=403)
        return None
