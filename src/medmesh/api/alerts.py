"""The JSON API for alerts: list, read, acknowledge, resolve. The acting clinician is the
name of the API token. Errors are OperationOutcomes like everywhere else."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from medmesh.access.http import require_reader
from medmesh.access.principals import ApiPrincipal
from medmesh.domain.alerts import Alert, AlertStatus
from medmesh.domain.alerts import alert_json as _render
from medmesh.domain.errors import InvalidSearch
from medmesh.events.bus import EventBus
from medmesh.fhir.openapi import ERROR_RESPONSES
from medmesh.rules import lifecycle
from medmesh.store.alerts import Alerts
from medmesh.store.database import Database

router = APIRouter(prefix="/api/v1", tags=["alerts"], responses=ERROR_RESPONSES)


def alert_json(alert: Alert) -> dict[str, Any]:
    """The JSON shape of an alert in this API and in ALERT events."""
    return _render(alert)


class Resolution(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=200, description="Why the alert is resolved")


def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def _bus(request: Request) -> EventBus:
    bus: EventBus = request.app.state.bus
    return bus


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
    patient: str | None = None,
    status: list[str] = Query(default=[]),
    limit: int = Query(100, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10**9),  # past a 64-bit integer the database fails
    _: ApiPrincipal = Depends(require_reader),
) -> dict[str, Any]:
    async with _database(request).read() as conn:
        found = await Alerts(conn).search(patient, _statuses(status), limit, offset)
    return {"alerts": [alert_json(a) for a in found]}


@router.get("/alerts/{alert_id}", summary="One alert")
async def read_alert(
    alert_id: str, request: Request, _: ApiPrincipal = Depends(require_reader)
) -> dict[str, Any]:
    async with _database(request).read() as conn:
        return alert_json(await Alerts(conn).get(alert_id))


@router.post("/alerts/{alert_id}/acknowledge", summary="Acknowledge an open alert")
async def acknowledge_alert(
    alert_id: str, request: Request, who: ApiPrincipal = Depends(require_reader)
) -> dict[str, Any]:
    alert = await lifecycle.acknowledge(_database(request), _bus(request), alert_id, who.name)
    return alert_json(alert)


@router.post("/alerts/{alert_id}/resolve", summary="Resolve an alert, with a reason")
async def resolve_alert(
    alert_id: str,
    body: Resolution,
    request: Request,
    who: ApiPrincipal = Depends(require_reader),
) -> dict[str, Any]:
    alert = await lifecycle.resolve(
        _database(request), _bus(request), alert_id, who.name, body.reason
    )
    return alert_json(alert)
