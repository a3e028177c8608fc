"""The JSON API of clinician time and the RPM report. Time entries are decided as the FHIR
`ChargeItem` they are exposed as; the report as reading the patient's record.

- `POST /api/v1/time-entries` a manual or set-up entry; `PATCH .../{id}` edits it (the
  earlier version kept, `GET .../{id}/history`); `GET /api/v1/time-entries?patient=` lists.
- `POST /api/v1/time-entries/activity` counts a moment of interactive work (idle cut-off).
- `GET /api/v1/rpm/report?patient=&month=YYYY-MM` (or `start=YYYY-MM-DD` for 30 days),
  `format=json|csv|pdf`; `GET /api/v1/rpm/program?month=` every visible patient's progress.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from medmesh.access.http import audit_results, require_principal, search_scope
from medmesh.access.identity.principals import Principal
from medmesh.access.policy.scopes import Interaction
from medmesh.care import access as care_access
from medmesh.care import time_entries as timing
from medmesh.care.rpm_export import csv_text, pdf_bytes
from medmesh.care.rpm_report import PatientPeriod, Period, calendar_month, report, thirty_days
from medmesh.care.rpm_rules import load_codes
from medmesh.domain.errors import InvalidRequest, NotFound
from medmesh.domain.timestamps import parse_rfc3339
from medmesh.domain.visits import TimeEntry
from medmesh.http.deps import DatabaseDep, SettingsDep
from medmesh.http.openapi import ERROR_RESPONSES
from medmesh.store.registry import Patients
from medmesh.store.visits import TimeEntries

router = APIRouter(prefix="/api/v1", tags=["clinician time and RPM"], responses=ERROR_RESPONSES)

RESOURCE = "ChargeItem"


class EntryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient: str = Field(max_length=36)
    kind: str = Field("manual", max_length=16, description="manual or setup")
    start: str = Field(max_length=40, description="RFC 3339 with a zone")
    end: str = Field(max_length=40)
    interactive: bool = Field(False, description="a real-time interactive communication")
    reason: str | None = Field(None, max_length=timing.MAX_REASON_CHARS)


class EntryChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str | None = Field(None, max_length=40)
    end: str | None = Field(None, max_length=40)
    interactive: bool | None = None
    reason: str | None = Field(None, max_length=timing.MAX_REASON_CHARS)


class Activity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient: str = Field(max_length=36)


def _instant(text: str | None, field: str) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_rfc3339(text).astimezone(UTC)
    except ValueError:
        raise InvalidRequest(f"{field} must be an RFC 3339 time with a zone") from None


def entry_json(entry: TimeEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "patient_id": entry.patient_id,
        "clinician": {"id": entry.clinician_id, "name": entry.clinician_name},
        "kind": entry.kind.value,
        "start": entry.start.isoformat(),
        "end": entry.end.isoformat(),
        "minutes": round(entry.duration.total_seconds() / 60, 1),
        "interactive": entry.interactive,
        "reason": entry.reason,
        "visit": entry.source_id,
        "updated_at": entry.updated_at.isoformat(),
        "updated_by": entry.updated_by,
    }


@router.post("/time-entries", status_code=201, summary="Record clinician time (manual, set-up)")
async def add_time_entry(
    body: EntryIn,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    await care_access.decide(
        request,
        principal,
        body.patient,
        RESOURCE,
        Interaction.CREATE,
        actors=(care_access.CARE_TEAM,),
        refusal="only the patient's care team records time on their care",
    )
    start, end = _instant(body.start, "start"), _instant(body.end, "end")
    assert start is not None and end is not None
    entry = await timing.add_entry(
        database,
        clinician=principal,
        patient_id=body.patient,
        kind=body.kind,
        start=start,
        end=end,
        interactive=body.interactive,
        reason=body.reason,
        now=datetime.now(UTC),
    )
    return entry_json(entry)


@router.post("/time-entries/activity", summary="Count a moment of interactive work")
async def count_activity(
    body: Activity,
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    await care_access.decide(
        request,
        principal,
        body.patient,
        RESOURCE,
        Interaction.CREATE,
        actors=(care_access.CARE_TEAM,),
        refusal="only the patient's care team records time on their care",
    )
    entry = await timing.activity(
        database,
        clinician=principal,
        patient_id=body.patient,
        at=datetime.now(UTC),
        idle=timedelta(minutes=settings.time_idle_minutes),
    )
    return entry_json(entry)


async def _entry(
    request: Request, database: DatabaseDep, principal: Principal, entry_id: str, how: Interaction
) -> TimeEntry:
    async with database.read() as conn:
        entry = await TimeEntries(conn).get(entry_id)
    if entry is None:
        raise NotFound("this time entry is not known")
    await care_access.decide(
        request,
        principal,
        entry.patient_id,
        RESOURCE,
        how,
        actors=(care_access.CARE_TEAM,),
        resource_id=entry.id,
        hide=True,
    )
    return entry


@router.patch("/time-entries/{entry_id}", summary="Edit a time entry (its clinician only)")
async def edit_time_entry(
    entry_id: str,
    body: EntryChange,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    entry = await _entry(request, database, principal, entry_id, Interaction.UPDATE)
    changed = await timing.edit_entry(
        database,
        entry=entry,
        by=principal,
        start=_instant(body.start, "start"),
        end=_instant(body.end, "end"),
        interactive=body.interactive,
        reason=body.reason,
        now=datetime.now(UTC),
    )
    return entry_json(changed)


@router.get("/time-entries/{entry_id}/history", summary="A time entry's earlier versions")
async def time_entry_history(
    entry_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    entry = await _entry(request, database, principal, entry_id, Interaction.READ)
    async with database.read() as conn:
        revisions = await TimeEntries(conn).revisions(entry)
    return {"entry": entry_json(entry), "revisions": revisions}


@router.get("/time-entries", summary="Clinician time on a patient's care, or on every visible")
async def list_time_entries(
    request: Request,
    database: DatabaseDep,
    patient: str | None = Query(None, max_length=36),
    start: str | None = Query(None, max_length=40),
    end: str | None = Query(None, max_length=40),
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    decisions = await search_scope(request, principal, patient, resource_type=RESOURCE)
    within = [p for p, d in decisions.items() if d.categories is None]
    async with database.read() as conn:
        found = await TimeEntries(conn).search(
            patients=within, start=_instant(start, "start"), end=_instant(end, "end")
        )
    if patient is None:
        await audit_results(
            request, principal, decisions, [e.patient_id for e in found], resource_type=RESOURCE
        )
    return {"entries": [entry_json(e) for e in found]}


def _period(month: str | None, start: str | None, zone: str) -> Period:
    now = datetime.now(UTC)
    if start is not None:
        return thirty_days(start, zone, now)
    if month is None:
        month = now.strftime("%Y-%m")
    return calendar_month(month, zone, now)


def row_json(row: PatientPeriod, name: str) -> dict[str, Any]:
    billing = row.billing
    return {
        "patient_id": row.patient_id,
        "patient": name,
        "period": {
            "start": row.period.first_day.isoformat(),
            "end": row.period.last_day.isoformat(),
            "timezone": row.period.zone,
        },
        "enrolled": row.enrolled.isoformat() if row.enrolled else None,
        "days_with_data": len(row.days),
        "days": [d.isoformat() for d in row.days],
        "setup_education": row.setup_on.isoformat() if row.setup_on else None,
        "management_minutes": row.minutes,
        "interactive_communication": row.interactive,
        "billable": [{"code": c, "units": u} for c, u in billing.codes],
        "days_to_next_code": billing.days_to_next,
        "next_device_code": billing.next_device_code,
        "minutes_to_next_code": billing.minutes_to_next,
        "next_time_code": billing.next_time_code,
        "needs_interactive_communication": billing.needs_interactive,
    }


async def _names(database: DatabaseDep, patient_ids: list[str]) -> dict[str, str]:
    async with database.read() as conn:
        found = await Patients(conn).get_many(patient_ids)
    return {p.id: f"{p.given} {p.family}" for p in found}


def _export(
    rows: list[PatientPeriod], names: dict[str, str], fmt: str, settings: SettingsDep
) -> Response | None:
    if fmt == "csv":
        return Response(
            csv_text(rows, names),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="rpm-report.csv"'},
        )
    if fmt == "pdf":
        return Response(
            pdf_bytes(rows, names, load_codes(settings.rpm_codes_file)),
            media_type="application/pdf",
            headers={"Content-Disposition": 'attachment; filename="rpm-report.pdf"'},
        )
    return None


_EXPORTS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The report: JSON, or CSV or PDF with `format`",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/csv": {"schema": {"type": "string"}},
            "application/pdf": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.get(
    "/rpm/report",
    summary="A patient's RPM report for a month or a 30-day period",
    responses=_EXPORTS,
)
async def rpm_report(
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    patient: str = Query(max_length=36),
    month: str | None = Query(None, max_length=7, description="YYYY-MM (default: this month)"),
    start: str | None = Query(None, max_length=10, description="YYYY-MM-DD: 30 days from it"),
    format: str = Query("json", pattern="^(json|csv|pdf)$"),
    principal: Principal = Depends(require_principal),
) -> Any:
    await care_access.decide(request, principal, patient, RESOURCE, Interaction.READ)
    period = _period(month, start, settings.rpm_timezone)
    codes = load_codes(settings.rpm_codes_file)
    async with database.read() as conn:
        rows = await report(conn, [patient], period, codes)
    names = await _names(database, [patient])
    exported = _export(rows, names, format, settings)
    if exported is not None:
        return exported
    return {"rules": codes.name, **row_json(rows[0], names.get(patient, ""))}


@router.get(
    "/rpm/program", summary="Every visible patient's RPM progress in a month", responses=_EXPORTS
)
async def rpm_program(
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    month: str | None = Query(None, max_length=7),
    start: str | None = Query(None, max_length=10),
    format: str = Query("json", pattern="^(json|csv|pdf)$"),
    principal: Principal = Depends(require_principal),
) -> Any:
    decisions = await search_scope(request, principal, None, resource_type=RESOURCE)
    within = sorted(p for p, d in decisions.items() if d.categories is None)
    period = _period(month, start, settings.rpm_timezone)
    codes = load_codes(settings.rpm_codes_file)
    async with database.read() as conn:
        rows = await report(conn, within, period, codes)
    await audit_results(request, principal, decisions, within, resource_type=RESOURCE)
    names = await _names(database, within)
    exported = _export(rows, names, format, settings)
    if exported is not None:
        return exported
    return {
        "rules": codes.name,
        "patients": [row_json(r, names.get(r.patient_id, "")) for r in rows],
    }
