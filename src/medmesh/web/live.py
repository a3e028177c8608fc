"""Live updates of the dashboard as Server-Sent Events, behind the session cookie (the browser's
EventSource cannot send a bearer token, and tokens do not belong in URLs).

The panel's stream is coalesced: at most one frame a second, naming the patients whose rows
changed, so 500 patients streaming cost each browser one row refresh a second, not 500. The
patient page's stream passes that patient's events through as they come (events/sse.py).

Each stream ends when the session would expire without further activity (and after
MAX_STREAM at the latest): the browser reconnects with its current cookie, which is checked
again, so a stream never outlives its session or a revoked token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from medmesh.events.bus import Subscription
from medmesh.events.model import ALERT, READINGS, Event
from medmesh.events.sse import KEEPALIVE_SECONDS, sse_events, sse_frame
from medmesh.http.deps import BusDep
from medmesh.web.access import VisiblePatients, open_record
from medmesh.web.responses import WebRoute
from medmesh.web.session import SessionUser, remaining_seconds, signed_in_quietly

TICK_SECONDS = 1.0
MAX_STREAM_SECONDS = 300.0
RECONNECT = b"retry: 2000\n\n"  # how soon the browser reconnects after a stream ends

ROWS = "rows"  # data: {"patients": [id, ...]}, the patients whose panel row changed
ALERTS = "alerts"  # data: {"alerts": [alert JSON, ...]}, alerts opened or changed

router = APIRouter(route_class=WebRoute, include_in_schema=False)


async def panel_frames(
    subscription: Subscription,
    is_disconnected: Callable[[], Awaitable[bool]],
    *,
    lifetime: float,
    visible: Callable[[str], Awaitable[bool]],
    tick: float = TICK_SECONDS,
) -> AsyncIterator[bytes]:
    """Coalesced frames for the patient panel: a change is sent at once if nothing was sent
    in the last `tick` seconds, otherwise with the others at the end of that tick."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lifetime
    changed: dict[str, None] = {}
    alerts: list[dict[str, Any]] = []
    last_flush = last_write = loop.time() - tick
    try:
        yield RECONNECT + b": connected\n\n"
        while (now := loop.time()) < deadline:
            if changed or alerts:
                if now >= last_flush + tick:
                    if changed:
                        yield sse_frame(Event(ROWS, None, {"patients": list(changed)}))
                    if alerts:
                        yield sse_frame(Event(ALERTS, None, {"alerts": alerts[-20:]}))
                    changed.clear()
                    alerts.clear()
                    last_flush = last_write = now
                    continue
                timeout = last_flush + tick - now
            else:
                timeout = last_write + KEEPALIVE_SECONDS - now
                if timeout <= 0:
                    if await is_disconnected():
                        return
                    yield b": keep-alive\n\n"
                    last_write = now
                    continue
            try:
                event = await asyncio.wait_for(subscription.get(), min(timeout, deadline - now))
            except TimeoutError:
                continue
            if event.patient_id is None or not await visible(event.patient_id):
                continue  # not this clinician's patient: not even that something happened
            if event.kind in (READINGS, ALERT):
                changed[event.patient_id] = None
            if event.kind == ALERT:
                alerts.append(event.data)
    finally:
        subscription.close()


async def for_at_most(frames: AsyncIterator[bytes], seconds: float) -> AsyncIterator[bytes]:
    """The frames until `seconds` have passed; then the inner stream is closed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        yield RECONNECT
        while (remaining := deadline - loop.time()) > 0:
            try:
                frame = await asyncio.wait_for(anext(frames), remaining)
            except (TimeoutError, StopAsyncIteration):
                return
            yield frame
    finally:
        close = getattr(frames, "aclose", None)
        if close is not None:
            await close()


def _stream(frames: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        frames, media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
    )


def _lifetime(request: Request) -> float:
    return max(1.0, min(remaining_seconds(request), MAX_STREAM_SECONDS))


def session_stream(request: Request, frames: AsyncIterator[bytes]) -> StreamingResponse:
    """An event stream of `frames` for a signed-in page, ended when the session would expire
    (or after MAX_STREAM_SECONDS), so the browser reconnects and its cookie is checked again."""
    return _stream(for_at_most(frames, _lifetime(request)))


async def _disconnected(request: Request) -> bool:
    return await request.is_disconnected()


@router.get("/dashboard/events")
async def panel_events(
    request: Request, bus: BusDep, user: SessionUser = Depends(signed_in_quietly)
) -> StreamingResponse:
    frames = panel_frames(
        bus.subscribe(),
        lambda: _disconnected(request),
        lifetime=_lifetime(request),
        visible=VisiblePatients(request, user),
    )
    return _stream(frames)


@router.get("/patients/{patient_id}/events")
async def patient_events(
    request: Request, bus: BusDep, patient_id: str, user: SessionUser = Depends(signed_in_quietly)
) -> StreamingResponse:
    await open_record(request, user, patient_id)
    visible = VisiblePatients(request, user)

    async def wanted(event: Event) -> bool:
        return (
            event.patient_id == patient_id
            and event.kind in (READINGS, ALERT)
            and await visible(patient_id)
        )

    return session_stream(request, sse_events(bus.subscribe(), wanted, request.is_disconnected))
