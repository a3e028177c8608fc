"""What a clinician does from the dashboard: acknowledge and resolve alerts, as themselves
(the session's name), through the same lifecycle as the JSON API."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from medmesh.access.policy.scopes import Interaction
from medmesh.http.deps import BusDep, DatabaseDep, database_of
from medmesh.rules import lifecycle
from medmesh.store.alerts import Alerts
from medmesh.store.registry import Patients
from medmesh.web import session
from medmesh.web.access import open_record
from medmesh.web.patient import alert_history
from medmesh.web.responses import WebRoute, is_htmx, problem
from medmesh.web.templating import page

router = APIRouter(route_class=WebRoute, include_in_schema=False)

MAX_REASON = 200


async def _answer(request: Request, alert_id: str, clinician: session.SessionUser) -> Response:
    """htmx: the refreshed alert history; a plain form post: back to the patient's page."""
    async with database_of(request).read() as conn:
        alert = await Alerts(conn).get(alert_id)
        if not is_htmx(request):
            return RedirectResponse(
                f"/patients/{alert.patient_id}#alert-{alert.id}", status_code=303
            )
        patient = await Patients(conn).get(alert.patient_id)
        history = await alert_history(conn, alert.patient_id)
    context = {"clinician": clinician, "patient": patient, **history}
    return page(request, "_alert_history.html", context)


async def _may_act(request: Request, clinician: session.SessionUser, alert_id: str) -> None:
    """Acting on an alert is updating the patient's record: decided and audited."""
    async with database_of(request).read() as conn:
        alert = await Alerts(conn).get(alert_id)
    await open_record(
        request,
        clinician,
        alert.patient_id,
        resource_type="Flag",
        interaction=Interaction.UPDATE,
        subtype="update",
    )


@router.post("/alerts/{alert_id}/acknowledge")
async def acknowledge(
    request: Request, database: DatabaseDep, bus: BusDep, alert_id: str
) -> Response:
    await session.check_csrf(request)
    clinician = await session.signed_in(request)
    await _may_act(request, clinician, alert_id)
    await lifecycle.acknowledge(database, bus, alert_id, clinician.display_name)
    return await _answer(request, alert_id, clinician)


@router.post("/alerts/{alert_id}/resolve")
async def resolve(request: Request, database: DatabaseDep, bus: BusDep, alert_id: str) -> Response:
    await session.check_csrf(request)
    clinician = await session.signed_in(request)
    await _may_act(request, clinician, alert_id)
    reason = (await request.form()).get("reason")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        return problem(
            request, 400, "Reason needed", f"Give a reason of 1 to {MAX_REASON} characters."
        )
    await lifecycle.resolve(database, bus, alert_id, clinician.display_name, reason.strip())
    return await _answer(request, alert_id, clinician)
