"""GET /api/v1/events: the event stream as Server-Sent Events, for API clients with a token.

`?patient=<id>` narrows it to one patient. A client receives events of the patients it may
see, within the categories a consent allows; the token and that set are decided again every
few seconds, so a revoked consent or token ends the flow without a reconnect, and what was sent
is audited in those few-second batches. The dashboard has its own, session-based stream.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from medmesh.access.http import (
    audit_results,
    authorized_patients,
    require_principal,
    search_scope,
)
from medmesh.access.identity.principals import Principal
from medmesh.access.policy.decision import ALERTS_CATEGORY, Decision, category_of_code
from medmesh.access.policy.scopes import Interaction
from medmesh.domain.errors import MedmeshError
from medmesh.events.model import ALERT, READINGS, Event
from medmesh.events.sse import sse_events
from medmesh.http.deps import BusDep
from medmesh.http.openapi import ERROR_RESPONSES, EVENT_STREAM

router = APIRouter(prefix="/api/v1", tags=["events"], responses=ERROR_RESPONSES)

_RECHECK_SECONDS = 5.0


@router.get(
    "/events",
    summary="Live events (Server-Sent Events)",
    response_class=StreamingResponse,
    responses=EVENT_STREAM,
)
async def event_stream(
    request: Request,
    bus: BusDep,
    patient: str | None = None,
    principal: Principal = Depends(require_principal),
) -> StreamingResponse:
    # Refused here, before the stream starts, when the named patient is not visible.
    decisions = await search_scope(request, principal, patient, resource_type="Observation")
    checked = time.monotonic()
    delivered: set[str] = set()
    subscription = bus.subscribe()

    async def refresh() -> None:
        """Audit what was sent since the last look, then decide again: the token (revoked,
        expired, account disabled?) and the patients it may see."""
        nonlocal decisions, principal
        if delivered:
            await audit_results(
                request,
                principal,
                decisions,
                delivered,
                resource_type="Observation",
                subtype="stream",
            )
            delivered.clear()
        try:
            principal = await require_principal(request)
            found = await authorized_patients(
                request, principal, resource_type="Observation", interaction=Interaction.SEARCH
            )
        except MedmeshError:  # refused now: nothing more for this stream
            found = {}
        decisions = {p: d for p, d in found.items() if patient is None or p == patient}

    async def wanted(event: Event) -> bool:
        nonlocal checked
        if event.patient_id is None or (patient is not None and event.patient_id != patient):
            return False
        if time.monotonic() - checked > _RECHECK_SECONDS:
            checked = time.monotonic()
            await refresh()
        decision = decisions.get(event.patient_id)
        if decision is None or not _within(decision, event):
            return False
        delivered.add(event.patient_id)
        return True

    return StreamingResponse(
        sse_events(subscription, wanted, request.is_disconnected),
        media_type="text/event-stream",
        headers={"X-Accel-Buffering": "no"},
    )


def _within(decision: Decision, event: Event) -> bool:
    """Whether the event's data is in the categories a consent allows."""
    if decision.categories is None:
        return True
    if event.kind == ALERT:
        return decision.allows_category(ALERTS_CATEGORY)
    codes = event.data.get("codes")
    if event.kind != READINGS or not isinstance(codes, list):
        return False
    categories = {category_of_code(str(code)) for code in codes}
    return all(c is not None and decision.allows_category(c) for c in categories)
