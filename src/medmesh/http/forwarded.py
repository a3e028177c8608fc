"""Believing a reverse proxy: X-Forwarded-For/-Proto (uvicorn's own middleware) from the
trusted proxies only, with the address the connection really came from kept in the scope, so a
header only a proxy may set (the forwarded client certificate) can be checked against it."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

PEER_KEY = "medmesh.peer"


def _networks(
    proxies: Sequence[str],
) -> tuple[list[ipaddress.IPv4Network | ipaddress.IPv6Network], bool]:
    networks, anyone = [], False
    for spec in proxies:
        if spec == "*":
            anyone = True
            continue
        try:
            networks.append(ipaddress.ip_network(spec, strict=False))
        except ValueError:
            continue  # a host name: uvicorn matches it literally; medmesh does not
    return networks, anyone


class ProxyList:
    """MEDMESH_TRUSTED_PROXIES: addresses, networks, or `*` for any."""

    def __init__(self, proxies: Sequence[str]) -> None:
        self.specs = [p.strip() for p in proxies if p.strip()]
        self._networks, self._anyone = _networks(self.specs)

    def trusts(self, address: str | None) -> bool:
        if address is None or not self.specs:
            return False
        if self._anyone:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address in self.specs
        return any(ip in network for network in self._networks)


class TrustedProxies:
    """ASGI middleware, the outermost layer of the app: keeps the connection's own address in
    the scope, then lets uvicorn's middleware apply X-Forwarded-* from the trusted proxies."""

    def __init__(self, app: ASGIApp, proxies: ProxyList) -> None:
        self._app: ASGIApp = (
            ProxyHeadersMiddleware(app, trusted_hosts=",".join(proxies.specs))  # type: ignore[arg-type,assignment]
            if proxies.specs
            else app
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            scope[PEER_KEY] = client[0] if client else None
        await self._app(scope, receive, send)


def connected_from(request: Request) -> str | None:
    """The address of the connection itself (the proxy's, when there is one)."""
    peer = request.scope.get(PEER_KEY)
    if peer is not None:
        return str(peer)
    return request.client.host if request.client is not None else None
