"""GET /api/v1/events: the event stream as Server-Sent Events, for API clients with a token.

`?patient=<id>` narrows it to one patient. A client receives events of the patients it may
see, within the categories a consent allows; the token and that set are decided again every
few seconds, so a revoked consent or token ends the flow without a reconnect, and what was sent
is audited in those few-second batches and when the stream ends. The dashboard has its own,
session-based stream.

A client connecting again with `Last-Event-ID` (an EventSource does) first gets the alerts
opened while it was away, up to `RESUME_WINDOW` back and `RESUME_LIMIT` of them, in their
state now, then the live events (docs/fhir-api.md, "Live events"). The alerts sent so are
audited at once, as `GET /api/v1/alerts` audits them. Readings are not replayed: they are in
the record, and a client reads them there.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Depends, Header, Request
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
from medmesh.domain.alerts import alert_json
from medmesh.domain.errors import MedmeshError
from medmesh.events.model import ALERT, READINGS, Event, event_id, event_time
from medmesh.events.sse import sse_events
from medmesh.http.deps import BusDep, DatabaseDep
from medmesh.http.openapi import ERROR_RESPONSES, EVENT_STREAM
from medmesh.store.alerts import Alerts

router = APIRouter(prefix="/api/v1", tags=["events"], responses=ERROR_RESPONSES)

_RECHECK_SECONDS = 5.0
RESUME_WINDOW = timedelta(hours=24)
RESUME_LIMIT = 500


@router.get(
    "/events",
    summary="Live events (Server-Sent Events)",
    response_class=StreamingResponse,
    responses=EVENT_STREAM,
)
async def event_stream(
    request: Request,
    bus: BusDep,
    database: DatabaseDep,
    patient: str | None = None,
    last_event_id: str | None = Header(
        None,
        alias="Last-Event-ID",
        max_length=64,
        description="The id of the last event received: the alerts opened since are sent first",
    ),
    principal: Principal = Depends(require_principal),
) -> StreamingResponse:
    # Refused here, before the stream starts, when the named patient is not visible.
    decisions = await search_scope(request, principal, patient, resource_type="Observation")
    checked = time.monotonic()
    delivered: set[str] = set()
    subscription = bus.subscribe()

    async def audit_delivered() -> None:
        """Audit what was sent since the last look (at each recheck, and when the stream ends)."""
        if delivered:
            patients = set(delivered)
            delivered.clear()
            await audit_results(
                request,
                principal,
                decisions,
                patients,
                resource_type="Observation",
                subtype="stream",
            )

    async def refresh() -> None:
        """Audit what was sent since the last look, then decide again: the token (revoked,
        expired, account disabled?) and the patients it may see."""
        nonlocal decisions, principal
        await audit_delivered()
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

    async def missed() -> Sequence[Event]:
        since = _resume_from(last_event_id)
        within = [p for p, d in decisions.items() if d.allows_category(ALERTS_CATEGORY)]
        if since is None or not within:
            return []
        async with database.read() as conn:
            found = await Alerts(conn).opened_since(since, within, RESUME_LIMIT)
        # Audited at once, as the alert list is: the stream may end before its next recheck.
        patients = {a.patient_id for a in found}
        await audit_results(
            request, principal, decisions, patients, resource_type="Flag", subtype="stream"
        )
        return [Event(ALERT, a.patient_id, alert_json(a), id=event_id(a.opened_at)) for a in found]

    return StreamingResponse(
        sse_events(subscription, wanted, request.is_disconnected, missed, audit_delivered),
        media_type="text/event-stream",
        headers={"X-Accel-Buffering": "no"},
    )


def _resume_from(last_event_id: str | None) -> datetime | None:
    """From when to send what the client missed: the time its last event id carries, at most
    `RESUME_WINDOW` back. An id that carries no time (none, or one from before event ids were
    ordered) resumes nothing."""
    at = event_time(last_event_id) if last_event_id else None
    if at is None:
        return None
    return max(at, datetime.now(UTC) - RESUME_WINDOW)


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
