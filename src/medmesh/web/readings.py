"""The patient's own readings (`/me/readings`): their vital signs as charts, drawn by the
dashboard's chart code (web/charts.py, web/patient.py, static/js/charts.js), and their devices
with when each last reported. On the same access decision as any look at a record, audited."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response

from medmesh.access.policy.scopes import Interaction
from medmesh.domain.registry import Device
from medmesh.http.deps import DatabaseDep
from medmesh.store.device_status import DeviceStatuses
from medmesh.store.vitals import Vitals
from medmesh.web.access import open_record, signed_in_patient, visible_vitals
from medmesh.web.patient import Connectivity, chart_cards, current_devices
from medmesh.web.responses import WebRoute
from medmesh.web.session import SessionUser
from medmesh.web.templating import page
from medmesh.web.vitals import CHART_VITALS

router = APIRouter(route_class=WebRoute, include_in_schema=False)

DEFAULT_RANGE = "7d"  # a patient looks back over days, a clinician over hours
# The ranges in words a patient uses.
RANGE_WORDS = {
    "24h": "Last day",
    "7d": "Last week",
    "30d": "Last month",
    "90d": "Last 3 months",
}


@dataclass(frozen=True, slots=True)
class MyDevice:
    device: Device
    connectivity: Connectivity
    last_reported: datetime | None  # when it last sent anything


async def readings_context(
    request: Request, database: DatabaseDep, user: SessionUser, patient_id: str
) -> dict[str, Any]:
    """The readings page's charts and devices of one patient, each look decided and audited:
    for the patient themself, and for a caregiver the categories their consent grants."""
    raw = request.query_params.get("range")
    range_key = raw if raw in RANGE_WORDS else DEFAULT_RANGE
    decision = await open_record(request, user, patient_id)
    await open_record(
        request,
        user,
        patient_id,
        resource_type="Device",
        interaction=Interaction.SEARCH,
        subtype="search",
    )
    shown = visible_vitals(decision, CHART_VITALS)
    now = datetime.now(UTC)
    async with database.read() as conn:
        latest = await Vitals(conn).latest([patient_id], [c for v in shown for c in v.codes])
        devices = []
        for device, connectivity in await current_devices(conn, patient_id, now):
            status = await DeviceStatuses(conn).get(device.id)
            devices.append(
                MyDevice(device, connectivity, status.last_seen if status is not None else None)
            )
    cards, chart_config = await chart_cards(database, patient_id, shown, latest, range_key, now)
    return {
        "user": user,
        "charts": cards,
        "chart_config": chart_config,
        "range_key": range_key,
        "range_words": RANGE_WORDS,
        "downsampled": chart_config["downsampled"],
        "devices": devices,
    }


@router.get("/me/readings")
async def my_readings(request: Request, database: DatabaseDep) -> Response:
    user = await signed_in_patient(request)
    context = await readings_context(request, database, user, str(user.patient_id))
    context |= {"nav": "readings", "readings_url": "/me/readings"}
    return page(request, "me_readings.html", context)
