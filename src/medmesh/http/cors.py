"""CORS for the browser apps registered as OAuth clients (SMART App Launch), and for nobody
else: a request from an origin some enabled app registered gets CORS headers on the FHIR API,
the token and revocation endpoints and the discovery documents; any other origin gets none, so
the browser keeps the answer from its page. No credentials mode: apps send bearer tokens, never
the dashboard's cookie.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medmesh.http.deps import database_of
from medmesh.store.oauth_clients import OAuthClients

_PREFIXES = ("/fhir/", "/.well-known/")
_PATHS = frozenset({"/fhir", "/oauth/token", "/oauth/revoke", "/oauth/jwks"})
ALLOWED_METHODS = "GET, POST, PUT, DELETE"
ALLOWED_HEADERS = "Authorization, Content-Type, Accept, Prefer, If-None-Exist, If-Match"
EXPOSED_HEADERS = "Location, Content-Location, ETag, Last-Modified"
PREFLIGHT_MAX_AGE = "600"
MAX_ORIGIN = 300


def applies_to(path: str) -> bool:
    return path in _PATHS or path.startswith(_PREFIXES)


class AppOrigins:
    """Pure ASGI: answers preflights itself and adds headers to the response start only."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not applies_to(scope["path"]):
            await self.app(scope, receive, send)
            return
        origin = Headers(scope=scope).get("origin")
        if not origin or len(origin) > MAX_ORIGIN or not await _registered(scope, origin):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            preflight = Response(
                status_code=204,
                headers={
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": ALLOWED_METHODS,
                    "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                    "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
                    "Vary": "Origin",
                },
            )
            await preflight(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                response_headers["Access-Control-Allow-Origin"] = origin
                response_headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
                response_headers.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def _registered(scope: Scope, origin: str) -> bool:
    async with database_of(Request(scope)).read() as conn:
        return await OAuthClients(conn).origin_registered(origin)
