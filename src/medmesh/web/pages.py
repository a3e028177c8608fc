"""The dashboard's pages: the patient panel, a patient's vitals and alerts, a device; and the
fragments and series their live updates fetch. Query values arrive as text and are read
leniently (a bad page number shows page 1), so no request lands on the API's error format."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from medmesh.access.policy.decision import ALERTS_CATEGORY
from medmesh.access.policy.scopes import Interaction
from medmesh.domain.alerts import Severity
from medmesh.domain.errors import NotFound
from medmesh.domain.vocabulary import LABORATORY_TESTS, OTHER_LABORATORY_CODES, Category
from medmesh.http.deps import DatabaseDep
from medmesh.store.database import Database
from medmesh.store.dead_letters import DeadLetters
from medmesh.store.device_status import DeviceStatuses
from medmesh.store.observations import ObservationQuery, Observations
from medmesh.store.registry import Assignments, Devices, Patients
from medmesh.store.vitals import Vitals
from medmesh.web.access import audit_shown, open_record, panel_patients, visible_vitals
from medmesh.web.care_summary import shown_care
from medmesh.web.charts import (
    DEFAULT_RANGE,
    RANGE_LABELS,
    RANGES,
    RAW_RANGE,
    load_new,
    uplot_data,
)
from medmesh.web.imaging import may_see_imaging, patient_studies
from medmesh.web.lab_results import lab_row
from medmesh.web.panel import PanelPage, panel_page, panel_rows
from medmesh.web.patient import (
    alert_history,
    chart_cards,
    connectivity,
    current_devices,
)
from medmesh.web.responses import WebRoute
from medmesh.web.rosters import on_call_now
from medmesh.web.session import SessionUser, signed_in, signed_in_quietly
from medmesh.web.templating import page
from medmesh.web.vitals import CHART_VITALS, PANEL_VITALS

router = APIRouter(route_class=WebRoute, include_in_schema=False)

MAX_ROW_IDS = 100
# The patient page's test results: the vocabulary's laboratory tests and any other LOINC code.
LABORATORY_RESULTS = (*LABORATORY_TESTS, OTHER_LABORATORY_CODES)
NO_ALERTS: dict[str, Any] = {"alerts": [], "active": [], "unacknowledged": 0}
REFUSED_WINDOW = timedelta(hours=24)
LATE_READINGS = timedelta(hours=6)  # how old a newly arrived reading may be to be added live
COMMIT_OVERLAP = timedelta(seconds=30)


def _now() -> datetime:
    return datetime.now(UTC)


def _positive(raw: str | None, default: int = 1) -> int:
    if raw is None or not (raw.isascii() and raw.isdigit()):  # int() reads ٣ too
        return default
    return int(raw) if 0 < int(raw) < 1_000_000 else default


def _range_key(raw: str | None) -> str:
    return raw if raw in RANGES else DEFAULT_RANGE


# --- the patient panel ---------------------------------------------------------------------


def _panel_context(clinician: SessionUser, found: PanelPage, **extra: Any) -> dict[str, Any]:
    return {
        "clinician": clinician,
        "nav": "panel",
        "panel": found,
        "vitals": PANEL_VITALS,
        "severities": sorted(Severity, key=lambda s: s.rank, reverse=True),
        **extra,
    }


@router.get("/")
async def panel(
    request: Request, database: DatabaseDep, clinician: SessionUser = Depends(signed_in)
) -> Response:
    number = _positive(request.query_params.get("page"))
    decisions = await panel_patients(request, clinician)
    async with database.read() as conn:
        found = await panel_page(conn, number, _now(), within=decisions.keys())
        on_call = await on_call_now(conn, clinician.organization_id, _now())
    await audit_shown(request, clinician, decisions, [r.patient.id for r in found.rows])
    return page(request, "panel.html", _panel_context(clinician, found, on_call=on_call))


@router.get("/panel/rows")
async def panel_fragment(
    request: Request, database: DatabaseDep, clinician: SessionUser = Depends(signed_in_quietly)
) -> Response:
    """Live refresh of the panel: `ids=a,b` gives those rows (swapped in by id), `page=n`
    the page's whole table body, re-sorted, with the summary."""
    ids = request.query_params.get("ids")
    decisions = await panel_patients(request, clinician)
    async with database.read() as conn:
        if ids is not None:
            wanted = [i for i in ids.split(",") if i in decisions][:MAX_ROW_IDS]
            rows = await panel_rows(conn, wanted, _now())
        else:
            number = _positive(request.query_params.get("page"))
            found = await panel_page(conn, number, _now(), within=decisions.keys())
            rows = found.rows
    await audit_shown(request, clinician, decisions, [r.patient.id for r in rows])
    if ids is not None:
        return page(request, "_panel_rows.html", {"rows": rows, "oob": True})
    return page(request, "_panel_body.html", _panel_context(clinician, found, oob=True))


# --- a patient -----------------------------------------------------------------------------


@router.get("/patients/{patient_id}")
async def patient_page(
    request: Request,
    database: DatabaseDep,
    patient_id: str,
    clinician: SessionUser = Depends(signed_in),
) -> Response:
    return await render_patient_page(request, database, clinician, patient_id)


async def render_patient_page(
    request: Request,
    database: Database,
    clinician: SessionUser,
    patient_id: str,
    *,
    care_error: str | None = None,
    care_form: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    """The patient page; a refused care form (web/patient_care.py) shows it again with the
    reason and what was entered."""
    range_key = _range_key(request.query_params.get("range"))
    decision = await open_record(request, clinician, patient_id)
    shown = visible_vitals(decision, CHART_VITALS)  # a consent may limit the categories
    now = _now()
    db = database
    async with db.read() as conn:
        patient = await Patients(conn).get(patient_id)
        devices = await current_devices(conn, patient_id, now)
        latest = await Vitals(conn).latest([patient_id], [c for v in shown for c in v.codes])
        history = (
            await alert_history(conn, patient_id)
            if decision.allows_category(ALERTS_CATEGORY)
            else NO_ALERTS
        )
        studies = await patient_studies(conn, patient_id) if may_see_imaging(decision) else []
        lab_results = (
            await Observations(conn).search(
                ObservationQuery(
                    patient_id=patient_id, codes=LABORATORY_RESULTS, newest_first=True, limit=20
                )
            )
            if decision.allows_category(Category.LABORATORY.value)
            else []
        )

    cards, chart_config = await chart_cards(db, patient_id, shown, latest, range_key, now)
    async with db.read() as conn:
        care = await shown_care(request, clinician, decision, conn, patient_id, now)
    return page(
        request,
        "patient.html",
        {
            "clinician": clinician,
            "patient": patient,
            "devices": devices,
            "charts": cards,
            "chart_config": chart_config,
            "range_key": range_key,
            "range_labels": RANGE_LABELS,
            "downsampled": RANGES[range_key] > RAW_RANGE,
            "studies": studies,
            "lab_results": [lab_row(o) for o in lab_results],
            "care": care,
            "now": now,
            "care_error": care_error,
            "care_form": care_form or {},
            **history,
        },
        status_code,
    )


@router.get("/patients/{patient_id}/series")
async def patient_series(
    request: Request,
    database: DatabaseDep,
    patient_id: str,
    user: SessionUser = Depends(signed_in_quietly),
) -> JSONResponse:
    """Readings stored after `since` (server time, seconds since the epoch, as the previous
    answer gave it) for the charts to add: {"now": t, "vitals": {"hr": uPlot data, ...}}.
    Late readings count too if taken within LATE_READINGS and the range. The window reaches
    COMMIT_OVERLAP further back, for batches that were being committed at `since` (stored
    with an earlier receipt time); the charts drop what they already have."""
    range_key = _range_key(request.query_params.get("range"))
    now = _now()
    try:
        since = datetime.fromtimestamp(float(request.query_params.get("since", "")), UTC)
    except (ValueError, OverflowError, OSError):
        since = now
    since -= COMMIT_OVERLAP
    start = max(now - RANGES[range_key], now - LATE_READINGS)
    decision = await open_record(
        request, user, patient_id, interaction=Interaction.SEARCH, subtype="search"
    )
    async with database.read() as conn:
        await Patients(conn).get(patient_id)
        vitals = Vitals(conn)
        data = {}
        for vital in visible_vitals(decision, CHART_VITALS):
            series = await load_new(vitals, patient_id, vital, start, since, now)
            data[vital.key] = uplot_data(series)
    return JSONResponse({"now": now.timestamp(), "vitals": data})


@router.get("/patients/{patient_id}/alerts")
async def patient_alerts(
    request: Request,
    database: DatabaseDep,
    patient_id: str,
    clinician: SessionUser = Depends(signed_in_quietly),
) -> Response:
    decision = await open_record(request, clinician, patient_id, resource_type="Flag")
    async with database.read() as conn:
        patient = await Patients(conn).get(patient_id)
        history = (
            await alert_history(conn, patient_id)
            if decision.allows_category(ALERTS_CATEGORY)
            else NO_ALERTS
        )
    context = {"clinician": clinician, "patient": patient, **history}
    return page(request, "_alert_history.html", context)


# --- a device ------------------------------------------------------------------------------


@router.get("/devices/{device_id}")
async def device_page(
    request: Request,
    database: DatabaseDep,
    device_id: str,
    clinician: SessionUser = Depends(signed_in),
) -> Response:
    now = _now()
    async with database.read() as conn:
        try:
            device = await Devices(conn).get(device_id)
        except NotFound:  # the same answer as a device of a record the caller may not see
            raise NotFound(f"Device/{device_id} is not known") from None
        status = await DeviceStatuses(conn).get(device_id)
        assignment = next(
            (a for a in await Assignments(conn).for_device(device_id) if a.covers(now)), None
        )
        refused = await DeadLetters(conn).reasons_since(device_id, now - REFUSED_WINDOW)
    patient = None
    if assignment is not None:
        # A device in use is part of its patient's record.
        await open_record(
            request,
            clinician,
            assignment.patient_id,
            resource_type="Device",
            resource_id=device_id,
        )
        async with database.read() as conn:
            patient = await Patients(conn).get(assignment.patient_id)
    return page(
        request,
        "device.html",
        {
            "clinician": clinician,
            "device": device,
            "status": status,
            "connectivity": connectivity(status, now),
            "assignment": assignment,
            "patient": patient,
            "refused": sorted(refused.items(), key=lambda item: -item[1]),
            "refused_total": sum(refused.values()),
        },
    )
