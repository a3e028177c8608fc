"""The JSON API for alerts: list, read, acknowledge, resolve, each decided by the access policy
(acting on an alert is an update of the patient's record). The acting clinician is the
principal's name. Errors are OperationOutcomes like everywhere else."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from medmesh.access.http import audit_results, authorize, require_principal, search_scope
from medmesh.access.identity.principals import Principal
from medmesh.access.policy.decision import ALERTS_CATEGORY
from medmesh.access.policy.scopes import Interaction
from medmesh.domain.alerts import Alert, AlertStatus
from medmesh.domain.alerts import alert_json as _render
from medmesh.domain.errors import InvalidSearch, NotFound
from medmesh.http.deps import BusDep, DatabaseDep, database_of
from medmesh.http.openapi import ERROR_RESPONSES
from medmesh.rules import lifecycle
from medmesh.store.alerts import Alerts

router = APIRouter(prefix="/api/v1", tags=["alerts"], responses=ERROR_RESPONSES)


def alert_json(alert: Alert) -> dict[str, Any]:
    """The JSON shape of an alert in this API and in ALERT events."""
    return _render(alert)


class Resolution(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=200, description="Why the alert is resolved")


def _statuses(values: list[str]) -> tuple[AlertStatus, ...]:
    wanted: list[AlertStatus] = []
    for value in (v for raw in values for v in raw.split(",") if v):
        if value == "active":
            wanted += [AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED]
            continue
        try:
            wanted.append(AlertStatus(value))
        except ValueError:
            raise InvalidSearch(
                "status must be open, acknowledged, resolved or active (open and acknowledged)"
            ) from None
    return tuple(dict.fromkeys(wanted))


@router.get("/alerts", summary="Alerts, newest first, by patient and status")
async def list_alerts(
    request: Request,
    database: DatabaseDep,
    patient: str | None = None,
    status: list[str] = Query(default=[]),
    limit: int = Query(100, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10**9),  # past a 64-bit integer the database fails
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    wanted = _statuses(status)
    decisions = await search_scope(request, principal, patient, resource_type="Flag")
    within = [p for p, d in decisions.items() if d.allows_category(ALERTS_CATEGORY)]
    async with database.read() as conn:
        found = await Alerts(conn).search(patient, wanted, limit, offset, within=within)
    if patient is None:
        await audit_results(
            request, principal, decisions, [a.patient_id for a in found], resource_type="Flag"
        )
    return {"alerts": [alert_json(a) for a in found]}


async def _authorized_alert(
    request: Request, principal: Principal, alert_id: str, interaction: Interaction
) -> Alert:
    """The alert, if the principal may see (read) or act on (update) it; else not found."""
    async with database_of(request).read() as conn:
        try:
            alert = await Alerts(conn).get(alert_id)
        except NotFound:
            raise NotFound(f"alert {alert_id} is not known") from None
    decision = await authorize(
        request,
        principal,
        patient_id=alert.patient_id,
        resource_type="Flag",
        interaction=interaction,
        subtype="read" if interaction is Interaction.READ else "update",
        resource_id=alert_id,
        hide=True,
    )
    if not decision.allows_category(ALERTS_CATEGORY):
        raise NotFound(f"alert {alert_id} is not known")
    return alert


@router.get("/alerts/{alert_id}", summary="One alert")
async def read_alert(
    alert_id: str, request: Request, principal: Principal = Depends(require_principal)
) -> dict[str, Any]:
    return alert_json(await _authorized_alert(request, principal, alert_id, Interaction.READ))


@router.post("/alerts/{alert_id}/acknowledge", summary="Acknowledge an open alert")
async def acknowledge_alert(
    alert_id: str,
    request: Request,
    database: DatabaseDep,
    bus: BusDep,
    who: Principal = Depends(require_principal),
) -> dict[str, Any]:
    await _authorized_alert(request, who, alert_id, Interaction.UPDATE)
    alert = await lifecycle.acknowledge(database, bus, alert_id, who.name)
    return alert_json(alert)


@router.post("/alerts/{alert_id}/resolve", summary="Resolve an alert, with a reason")
async def resolve_alert(
    alert_id: str,
    body: Resolution,
    request: Request,
    database: DatabaseDep,
    bus: BusDep,
    who: Principal = Depends(require_principal),
) -> dict[str, Any]:
    await _authorized_alert(request, who, alert_id, Interaction.UPDATE)
    alert = await lifecycle.resolve(database, bus, alert_id, who.name, body.reason)
    return alert_json(alert)
