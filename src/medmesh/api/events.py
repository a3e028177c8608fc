"""GET /api/v1/events: the event stream as Server-Sent Events, for API clients with a token.

`?patient=<id>` narrows it to one patient. A client receives events of the patients it may
see; that set is decided again every few seconds, so a revoked consent ends the flow of that
patient's events without a reconnect. The dashboard has its own, session-based stream.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from medmesh.access.http import require_principal, search_scope
from medmesh.access.principals import Principal
from medmesh.domain.errors import MedmeshError
from medmesh.events.bus import EventBus
from medmesh.events.model import Event
from medmesh.events.sse import sse_events
from medmesh.fhir.openapi import ERROR_RESPONSES, EVENT_STREAM

router = APIRouter(prefix="/api/v1", tags=["events"], responses=ERROR_RESPONSES)

_RECHECK_SECONDS = 5.0


@router.get(
    "/events",
    summary="Live events (Server-Sent Events)",
    response_class=StreamingResponse,
    responses=EVENT_STREAM,
)
async def event_stream(
    request: Request, patient: str | None = None, principal: Principal = Depends(require_principal)
) -> StreamingResponse:
    # Refused here, before the stream starts, when the named patient is not visible.
    visible = set(await search_scope(request, principal, patient, resource_type="Observation"))
    checked = time.monotonic()
    bus: EventBus = request.app.state.bus
    subscription = bus.subscribe()

    async def wanted(event: Event) -> bool:
        nonlocal visible, checked
        if event.patient_id is None or (patient is not None and event.patient_id != patient):
            return False
        if time.monotonic() - checked > _RECHECK_SECONDS:
            checked = time.monotonic()
            try:
                visible = set(
                    await search_scope(request, principal, patient, resource_type="Observation")
                )
            except MedmeshError:  # refused now (consent revoked…): nothing more for this stream
                visible = set()
        return event.patient_id in visible

    return StreamingResponse(
        sse_events(subscription, wanted, request.is_disconnected),
        media_type="text/event-stream",
        headers={"X-Accel-Buffering": "no"},
    )
