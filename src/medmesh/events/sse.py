"""Server-Sent Events framing of bus events, shared by the JSON API and the dashboard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from medmesh.events.bus import Subscription
from medmesh.events.model import Event

KEEPALIVE_SECONDS = 15.0


def sse_frame(event: Event) -> bytes:
    return (
        b"id: "
        + event.id.encode()
        + b"\nevent: "
        + event.kind.encode()
        + b"\ndata: "
        + (event.to_json())
        + b"\n\n"
    )


async def sse_events(
    subscription: Subscription,
    wanted: Callable[[Event], bool | Awaitable[bool]],
    is_disconnected: Callable[[], object],
) -> AsyncIterator[bytes]:
    """Frames for the events `wanted` lets through, with a comment line as keep-alive so
    proxies keep the connection open; ends (and unsubscribes) when the client goes away."""
    try:
        yield b": connected\n\n"
        while True:
            try:
                event = await asyncio.wait_for(subscription.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                check = is_disconnected()
                if asyncio.iscoroutine(check) and await check:
                    return
                yield b": keep-alive\n\n"
                continue
            keep = wanted(event)
            if not isinstance(keep, bool):
                keep = await keep
            if keep:
                yield sse_frame(event)
    finally:
        subscription.close()
