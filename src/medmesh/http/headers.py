"""Security headers on every HTTP response, errors and streams included (pure ASGI: it touches
the response start only, never the body chunks). Why each header is there: docs/security.md."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Dashboard pages: scripts, styles and connections (htmx requests, the SSE streams) from this
# origin only; no inline script or style, no eval; never framed. Images may be blob: URLs the
# page's own script made from frames it fetched from this origin (the imaging viewer).
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
# Everything that is not a page (FHIR, JSON, event streams, errors): nothing may load or run.
API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# FastAPI's interactive API docs load Swagger UI / ReDoc from their CDN and start them with an
# inline script. The pages reflect nothing a visitor sends, so inline script is tolerable there
# and nowhere else.
DOCS_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
    "https://cdn.redoc.ly; connect-src 'self'; worker-src blob:; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})

# Health data (values, names, identifiers) may be in any response but the static assets: no
# browser or proxy may keep a copy.
NO_STORE = "no-store"
# Our own CSS and JS keep their URL across releases: cached, but revalidated (ETag) each time.
STATIC_REVALIDATE = "no-cache"
# Vendored libraries carry their version in the path, so a URL's content never changes.
STATIC_IMMUTABLE = "public, max-age=31536000, immutable"

_ALWAYS = {
    # One year, subdomains too; browsers ignore it over plain HTTP (loopback development).
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # No page of ours uses these features but the video visit (VISIT_PERMISSIONS).
    "Permissions-Policy": (
        "camera=(), microphone=(), geolocation=(), payment=(), usb=(), serial=(), hid=(), "
        "bluetooth=(), midi=(), display-capture=(), browsing-topics=()"
    ),
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
}


# The video visit page (/visits/...) uses camera, microphone and screen sharing, itself only.
VISIT_PERMISSIONS = (
    "camera=(self), microphone=(self), geolocation=(), payment=(), usb=(), serial=(), hid=(), "
    "bluetooth=(), midi=(), display-capture=(self), browsing-topics=()"
)


def cache_control(path: str) -> str:
    if path.startswith("/static/vendor/"):
        return STATIC_IMMUTABLE
    if path.startswith("/static/"):
        return STATIC_REVALIDATE
    return NO_STORE


def content_security_policy(path: str, content_type: str) -> str:
    if path in DOCS_PATHS:
        return DOCS_POLICY
    if content_type.startswith("text/html"):
        return PAGE_POLICY
    return API_POLICY


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _ALWAYS.items():
                    headers[name] = value
                if path.startswith("/visits/"):
                    headers["Permissions-Policy"] = VISIT_PERMISSIONS
                # Set, not defaulted: a route's own Cache-Control (an event stream's no-cache,
                # say) would still let a cache store health data.
                headers["Cache-Control"] = cache_control(path)
                headers["Content-Security-Policy"] = content_security_policy(
                    path, headers.get("content-type", "")
                )
            await send(message)

        await self.app(scope, receive, send_with_headers)
