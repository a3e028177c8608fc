"""The remote-monitoring program for staff (`/rpm`): every patient on the person's panel with
this month's progress (days so far and still needed for the next device code, minutes and
minutes to the next management code, what is billable so far), and the CSV and PDF of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response

from medmesh.access.http import audit_results
from medmesh.access.policy.scopes import Interaction
from medmesh.care import access as care_access
from medmesh.care import time_entries as timing
from medmesh.care.rpm_export import csv_text, pdf_bytes
from medmesh.care.rpm_report import calendar_month, report
from medmesh.care.rpm_rules import load_codes
from medmesh.domain.errors import InvalidRequest
from medmesh.http.deps import DatabaseDep, SettingsDep
from medmesh.store.registry import Patients
from medmesh.web import session
from medmesh.web.access import panel_patients, principal_of
from medmesh.web.responses import WebRoute
from medmesh.web.session import SessionUser, signed_in
from medmesh.web.templating import page

router = APIRouter(route_class=WebRoute, include_in_schema=False)


@router.get("/rpm")
async def program(
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    month: str | None = Query(None, max_length=7),
    format: str = Query("html", pattern="^(html|csv|pdf)$"),
    clinician: SessionUser = Depends(signed_in),
) -> Response:
    now = datetime.now(UTC)
    error = None
    try:
        period = calendar_month(month or now.strftime("%Y-%m"), settings.rpm_timezone, now)
    except InvalidRequest as refusal:
        error = str(refusal)
        period = calendar_month(now.strftime("%Y-%m"), settings.rpm_timezone, now)
    decisions = await panel_patients(request, clinician)
    within = sorted(decisions)
    codes = load_codes(settings.rpm_codes_file)
    async with database.read() as conn:
        rows = await report(conn, within, period, codes)
        names = {p.id: f"{p.given} {p.family}" for p in await Patients(conn).get_many(within)}
    await audit_results(
        request, principal_of(request, clinician), decisions, within, resource_type="ChargeItem"
    )
    if format == "csv" and error is None:
        return Response(
            csv_text(rows, names),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="rpm-{period.first_day:%Y-%m}.csv"'
            },
        )
    if format == "pdf" and error is None:
        return Response(
            pdf_bytes(rows, names, codes),
            media_type="application/pdf",
            headers={
                "Content-Disposition": f'attachment; filename="rpm-{period.first_day:%Y-%m}.pdf"'
            },
        )
    context: dict[str, Any] = {
        "clinician": clinician,
        "nav": "rpm",
        "rows": sorted(rows, key=lambda r: names.get(r.patient_id, "")),
        "names": names,
        "period": period,
        "rules": codes.name,
        "error": error,
    }
    return page(request, "rpm.html", context, 400 if error else 200)


@router.post("/rpm/activity/{patient_id}")
async def count_activity(
    patient_id: str,
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    clinician: SessionUser = Depends(signed_in),
) -> Response:
    """A moment of a clinician's interactive work on a patient's page (static/js/activity.js
    sends it only while the person is active); counted with the idle cut-off."""
    await session.check_csrf(request)
    principal = principal_of(request, clinician)
    await care_access.decide(
        request,
        principal,
        patient_id,
        "ChargeItem",
        Interaction.CREATE,
        actors=(care_access.CARE_TEAM,),
        refusal="only the patient's care team records time on their care",
    )
    await timing.activity(
        database,
        clinician=principal,
        patient_id=patient_id,
        at=datetime.now(UTC),
        idle=timedelta(minutes=settings.time_idle_minutes),
    )
    return Response(status_code=204)
