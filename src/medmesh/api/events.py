"""GET /api/v1/events: the event stream as Server-Sent Events, for API clients with a token.

`?patient=<id>` narrows it to one patient. The dashboard has its own, session-based stream.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from medmesh.access.http import require_reader
from medmesh.access.principals import ApiPrincipal
from medmesh.events.bus import EventBus
from medmesh.events.model import Event
from medmesh.events.sse import sse_events
from medmesh.fhir.openapi import ERROR_RESPONSES, EVENT_STREAM

router = APIRouter(prefix="/api/v1", tags=["events"], responses=ERROR_RESPONSES)


@router.get(
    "/events",
    summary="Live events (Server-Sent Events)",
    response_class=StreamingResponse,
    responses=EVENT_STREAM,
)
async def event_stream(
    request: Request, patient: str | None = None, _: ApiPrincipal = Depends(require_reader)
) -> StreamingResponse:
    bus: EventBus = request.app.state.bus
    subscription = bus.subscribe()

    def wanted(event: Event) -> bool:
        return patient is None or event.patient_id == patient

    return StreamingResponse(
        sse_events(subscription, wanted, request.is_disconnected),
        media_type="text/event-stream",
        headers={"X-Accel-Buffering": "no"},
    )
