"""Server-Sent Events framing of bus events, shared by the JSON API and the dashboard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any

from medmesh.events.bus import Subscription
from medmesh.events.model import Event, event_id

KEEPALIVE_SECONDS = 15.0
# Work a stream leaves when it ends (`closed`), held until done: a task nothing refers to may
# be collected before it runs.
_closing: set[asyncio.Task[None]] = set()


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
    missed: Callable[[], Awaitable[Sequence[Event]]] | None = None,
    closed: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> AsyncIterator[bytes]:
    """Frames for the events `wanted` lets through, with a comment line as keep-alive so
    proxies keep the connection open; ends (and unsubscribes) when the client goes away.

    The first frame carries an id, the moment of connecting, and no data: a browser's
    EventSource keeps it as its last event id and sends it back (`Last-Event-ID`) when it
    connects again, so a client that saw no event yet still says from when it was away. Then
    come the events `missed` finds (through `wanted` like the rest), then the live ones; the
    subscription was taken first, so nothing falls between the two. `closed` runs when the
    stream ends, however it ends, in a task of its own: a client's going away cancels the
    stream, and what it was sent last must still be audited."""
    try:
        yield b": connected\nid: " + event_id().encode() + b"\n\n"
        for event in await missed() if missed is not None else ():
            if await _keep(wanted, event):
                yield sse_frame(event)
        while True:
            try:
                event = await asyncio.wait_for(subscription.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                check = is_disconnected()
                if asyncio.iscoroutine(check) and await check:
                    return
                yield b": keep-alive\n\n"
                continue
            if await _keep(wanted, event):
                yield sse_frame(event)
    finally:
        subscription.close()
        if closed is not None:
            task = asyncio.get_running_loop().create_task(closed())
            _closing.add(task)
            task.add_done_callback(_closing.discard)


async def _keep(wanted: Callable[[Event], bool | Awaitable[bool]], event: Event) -> bool:
    keep = wanted(event)
    if not isinstance(keep, bool):
        keep = await keep
    return keep
