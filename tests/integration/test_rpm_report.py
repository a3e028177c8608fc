"""The RPM report and clinician time on both backends, with simulated months: days counted in
the clinic's zone at the day boundary, a month boundary cutting readings and a time entry, a
patient who joined mid-month, a month not yet begun; CSV and a PDF whose text is read back;
time entries refused in the future, overlapping or negative, and edited with a trail; erasure
removes visits, notes and time entries, and a copy from before cannot open them."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pypdf import PdfReader
from sqlalchemy import func, select

from medmesh import provisioning
from medmesh.access.erasure import erase_patient
from medmesh.app import create_app
from medmesh.care.rpm_report import calendar_month, report, thirty_days
from medmesh.care.rpm_rules import load_codes
from medmesh.config import Settings
from medmesh.crypto.errors import DataKeyDestroyed
from medmesh.domain.appointments import (
    Appointment,
    AppointmentStatus,
    Schedule,
    VisitKind,
)
from medmesh.domain.errors import InvalidRequest
from medmesh.domain.visits import TimeEntry, TimeKind, Visit
from medmesh.store.appointments import Appointments, Schedules
from medmesh.store.database import Database
from medmesh.store.schema import observations, time_entries, visits
from medmesh.store.visits import TimeEntries, Visits
from tests.conftest import World, make_world
from tests.crypto_fixtures import keyed_database
from tests.helpers import AppClient

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
CODES = load_codes()


async def _readings(database: Database, world: World, *moments: datetime) -> None:
    async with database.write() as conn:
        for moment in moments:
            await conn.execute(
                observations.insert().values(
                    id=str(uuid.uuid4()),
                    patient_id=world.patient_id,
                    device_id=world.device_id,
                    message_id=str(uuid.uuid4()),
                    code="8867-4",
                    effective=moment,
                    value=None,
                    unit=None,
                    received_at=moment,
                )
            )


async def _time(
    database: Database,
    world: World,
    start: datetime,
    minutes: float,
    *,
    interactive: bool = True,
    kind: TimeKind = TimeKind.MANUAL,
) -> TimeEntry:
    entry = TimeEntry(
        id=str(uuid.uuid4()),
        patient_id=world.patient_id,
        clinician_id=world.clinician_id,
        clinician_name="dr test",
        kind=kind,
        start=start,
        end=start + timedelta(minutes=minutes),
        interactive=interactive,
        reason="phone call",
        source_id=None,
        created_at=start,
        updated_at=start,
        updated_by=world.clinician_id,
    )
    async with database.write() as conn:
        await TimeEntries(conn).add(entry)
    return entry


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def test_days_are_counted_in_the_clinics_zone_at_the_day_boundary(
    database: Database,
) -> None:
    world = await make_world(database)
    # 22:30 on 2 Nov and 00:30 on 3 Nov in New York; both on 3 Nov in UTC.
    await _readings(database, world, _at("2026-11-03T03:30"), _at("2026-11-03T05:30"))
    async with database.read() as conn:
        utc = await report(conn, [world.patient_id], calendar_month("2026-11", "UTC", NOW), CODES)
        ny = calendar_month("2026-11", "America/New_York", NOW)
        local = await report(conn, [world.patient_id], ny, CODES)
    assert len(utc[0].days) == 1
    assert [d.isoformat() for d in local[0].days] == ["2026-11-02", "2026-11-03"]
    assert dict(local[0].billing.codes) == {"99445": 1}
    assert dict(utc[0].billing.codes) == {}


async def test_a_month_boundary_splits_readings_and_a_time_entry_that_spans_it(
    database: Database,
) -> None:
    world = await make_world(database)
    await _readings(database, world, _at("2026-10-31T23:00"), _at("2026-11-01T01:00"))
    await _time(database, world, _at("2026-10-31T23:50"), 30)  # 10 in October, 20 in November
    async with database.read() as conn:
        october = await report(
            conn, [world.patient_id], calendar_month("2026-10", "UTC", NOW), CODES
        )
        november = await report(
            conn, [world.patient_id], calendar_month("2026-11", "UTC", NOW), CODES
        )
    assert (len(october[0].days), october[0].minutes) == (1, 10)
    assert dict(october[0].billing.codes) == {"99470": 1}
    assert (len(november[0].days), november[0].minutes) == (1, 20)
    assert dict(november[0].billing.codes) == {"99457": 1}


async def test_a_patient_who_joined_mid_month_is_billed_on_the_days_since(
    database: Database,
) -> None:
    world = await make_world(database)
    joined = await provisioning.create_patient(
        database, family="Late", given="Lee", identifier="MRN-LATE"
    )
    device = await provisioning.register_device(database, display_name="Cuff", model="BP-1")
    await provisioning.assign_device(database, device.device_id, joined.id, _at("2026-11-15T09:00"))
    late = World(joined.id, device.device_id, device.secret, world.token, world.clinician_id)
    await _readings(
        database, late, *(_at("2026-11-15T10:00") + timedelta(days=n) for n in range(16))
    )
    await _time(database, late, _at("2026-11-15T09:00"), 30, kind=TimeKind.SETUP)
    await _time(database, late, _at("2026-11-20T09:00"), 41)
    async with database.read() as conn:
        [row] = await report(conn, [joined.id], calendar_month("2026-11", "UTC", NOW), CODES)
    assert row.enrolled is not None and row.enrolled.isoformat() == "2026-11-15"
    assert len(row.days) == 16
    assert row.minutes == 41  # set-up time is not treatment management
    assert dict(row.billing.codes) == {"99453": 1, "99454": 1, "99457": 1, "99458": 1}


async def test_minutes_without_an_interactive_communication_bill_no_management_code(
    database: Database,
) -> None:
    world = await make_world(database)
    await _time(database, world, _at("2026-11-10T09:00"), 25, interactive=False)
    async with database.read() as conn:
        [row] = await report(conn, [world.patient_id], thirty_days("2026-11-05", "UTC", NOW), CODES)
    assert row.minutes == 25
    assert row.billing.codes == ()
    assert row.billing.needs_interactive


def test_a_month_or_period_not_yet_begun_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="has not begun yet"):
        calendar_month("2027-01", "UTC", NOW)
    with pytest.raises(InvalidRequest, match="has not begun yet"):
        thirty_days("2026-12-05", "UTC", NOW)
    with pytest.raises(InvalidRequest, match="YYYY-MM"):
        calendar_month("November", "UTC", NOW)


@pytest.fixture
async def http(database_url: str) -> AsyncIterator[AppClient]:
    settings = Settings(
        database_url=database_url, auto_migrate=False, alert_check_interval_seconds=0
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app), AppClient(app) as client:
        yield client


async def test_the_report_exports_as_csv_and_a_pdf_whose_text_names_the_codes(
    database: Database, http: AppClient
) -> None:
    world = await make_world(database)
    await make_world(database, "MRN-2")  # another care team's patient: not in the program
    await _readings(
        database, world, *(_at("2026-11-01T10:00") + timedelta(days=n) for n in range(16))
    )
    await _time(database, world, _at("2026-11-12T09:00"), 22)
    params = {"patient": world.patient_id, "month": "2026-11"}
    found = await http.get("/api/v1/rpm/report", params=params, headers=world.reader_headers)
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["days_with_data"] == 16
    assert body["billable"] == [{"code": "99454", "units": 1}, {"code": "99457", "units": 1}]
    assert body["minutes_to_next_code"] == 18

    as_csv = await http.get(
        "/api/v1/rpm/report", params={**params, "format": "csv"}, headers=world.reader_headers
    )
    [row] = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert (row["days_with_data"], row["management_minutes"]) == ("16", "22")
    assert row["billable_codes"] == "99454 99457"

    as_pdf = await http.get(
        "/api/v1/rpm/report", params={**params, "format": "pdf"}, headers=world.reader_headers
    )
    assert as_pdf.headers["content-type"] == "application/pdf"
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(as_pdf.content)).pages)
    assert "Jane Doe" in text
    assert "Days with device data: 16" in text
    assert "Billable codes: 99454 99457" in text
    assert "CMS-1832-F" in text

    program = await http.get(
        "/api/v1/rpm/program", params={"month": "2026-11"}, headers=world.reader_headers
    )
    assert [p["patient_id"] for p in program.json()["patients"]] == [world.patient_id]

    early = await http.get(
        "/api/v1/rpm/report",
        params={"patient": world.patient_id, "month": "2099-01"},
        headers=world.reader_headers,
    )
    assert early.status_code == 400
    assert "has not begun yet" in early.text


async def test_time_entries_refuse_future_overlap_and_negative_and_keep_a_trail_of_edits(
    database: Database, http: AppClient
) -> None:
    world = await make_world(database)
    other = await make_world(database, "MRN-2")
    now = datetime.now(UTC).replace(microsecond=0)

    def entry(start: datetime, end: datetime, **extra: object) -> dict[str, object]:
        return {
            "patient": world.patient_id,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "reason": "phone call about readings",
            "interactive": True,
            **extra,
        }

    post = "/api/v1/time-entries"
    hour_ago = now - timedelta(hours=1)
    made = await http.post(
        post, json=entry(hour_ago, hour_ago + timedelta(minutes=15)), headers=world.reader_headers
    )
    assert made.status_code == 201, made.text
    future = await http.post(
        post,
        json=entry(now + timedelta(minutes=5), now + timedelta(minutes=20)),
        headers=world.reader_headers,
    )
    assert future.status_code == 400 and "future" in future.text
    negative = await http.post(
        post, json=entry(hour_ago, hour_ago - timedelta(minutes=5)), headers=world.reader_headers
    )
    assert negative.status_code == 400 and "negative" in negative.text
    overlap = await http.post(
        post,
        json=entry(hour_ago + timedelta(minutes=10), hour_ago + timedelta(minutes=30)),
        headers=world.reader_headers,
    )
    assert overlap.status_code == 409 and "overlaps" in overlap.text
    no_reason = await http.post(
        post,
        json=entry(now - timedelta(hours=3), now - timedelta(hours=2), reason=None),
        headers=world.reader_headers,
    )
    assert no_reason.status_code == 400 and "what the time was for" in no_reason.text
    outsider = await http.post(
        post,
        json=entry(now - timedelta(hours=5), now - timedelta(hours=4)),
        headers=other.reader_headers,
    )
    assert outsider.status_code == 403

    entry_id = made.json()["id"]
    edited = await http.patch(
        f"{post}/{entry_id}",
        json={"end": (hour_ago + timedelta(minutes=25)).isoformat()},
        headers=world.reader_headers,
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["minutes"] == 25.0
    history = (await http.get(f"{post}/{entry_id}/history", headers=world.reader_headers)).json()
    [revision] = history["revisions"]
    assert revision["before"]["end"] == (hour_ago + timedelta(minutes=15)).isoformat()
    assert revision["changed_by"] == world.clinician_id
    listed = await http.get(
        post, params={"patient": world.patient_id}, headers=world.reader_headers
    )
    assert [e["id"] for e in listed.json()["entries"]] == [entry_id]


async def test_erasure_removes_visits_notes_and_time_entries_and_a_copy_cannot_open_them(
    database_url: str, tmp_path: Path
) -> None:
    keyed = keyed_database(database_url, tmp_path / "keys")
    try:
        world = await make_world(keyed)
        start = _at("2026-11-02T09:00")
        schedule = Schedule(
            id=str(uuid.uuid4()),
            clinician_id=world.clinician_id,
            clinician_name="dr test",
            timezone="UTC",
            slot_minutes=30,
            kinds=(VisitKind.VIDEO,),
            hours=(),
            book_ahead_days=30,
            cancel_hours=0,
            updated_at=start,
        )
        appointment = Appointment(
            id=str(uuid.uuid4()),
            schedule_id=schedule.id,
            clinician_id=world.clinician_id,
            clinician_name="dr test",
            patient_id=world.patient_id,
            start=start,
            end=start + timedelta(minutes=30),
            kind=VisitKind.VIDEO,
            status=AppointmentStatus.BOOKED,
            reason=None,
            booked_at=start,
            booked_by=world.clinician_id,
        )
        async with keyed.write() as conn:
            await Schedules(conn).put(schedule)
            await Appointments(conn).book(appointment)
            visit = await Visits(conn).begin(
                Visit(appointment.id, world.patient_id, world.clinician_id, start)
            )
            await Visits(conn).write_note(visit, "Chest pain resolved", start)
        entry = await _time(keyed, world, start, 20)
        async with keyed.read() as conn:
            sealed_note = (await conn.execute(select(visits.c.note))).scalar_one()
            sealed_reason = (await conn.execute(select(time_entries.c.reason))).scalar_one()
        assert b"Chest pain" not in sealed_note

        await erase_patient(keyed, world.patient_id, reason="request", requested_by="dpo")

        async with keyed.read() as conn:
            for table in (visits, time_entries):
                count = select(func.count()).select_from(table)
                assert (await conn.execute(count)).scalar_one() == 0
        with pytest.raises(DataKeyDestroyed):
            key = await keyed.cipher.key(world.patient_id)
            key.open_text(sealed_note, "visits.note", appointment.id)
        with pytest.raises(DataKeyDestroyed):
            key = await keyed.cipher.key(world.patient_id)
            key.open_text(sealed_reason, "time_entries.reason", entry.id)
    finally:
        await keyed.dispose()


async def test_visits_and_time_are_fhir_encounters_and_charge_items_in_everything(
    database: Database, http: AppClient
) -> None:
    world = await make_world(database)
    start = _at("2026-11-02T09:00")
    async with database.write() as conn:
        await Schedules(conn).put(
            Schedule(
                str(uuid.uuid4()),
                world.clinician_id,
                "dr test",
                "UTC",
                30,
                (VisitKind.VIDEO,),
                (),
                30,
                0,
                start,
            )
        )
        schedule = await Schedules(conn).of_clinician(world.clinician_id)
        assert schedule is not None
        appointment = Appointment(
            str(uuid.uuid4()),
            schedule.id,
            world.clinician_id,
            "dr test",
            world.patient_id,
            start,
            start + timedelta(minutes=30),
            VisitKind.VIDEO,
            AppointmentStatus.BOOKED,
            None,
            start,
            world.clinician_id,
        )
        await Appointments(conn).book(appointment)
        visit = await Visits(conn).begin(
            Visit(appointment.id, world.patient_id, world.clinician_id, start)
        )
        await Visits(conn).write_note(visit, "BP controlled", start)
        await Visits(conn).left(appointment.id, start + timedelta(minutes=20))
    entry = await _time(database, world, start, 20, kind=TimeKind.VISIT)
    headers = world.reader_headers
    encounter = (await http.get(f"/fhir/Encounter/{appointment.id}", headers=headers)).json()
    assert encounter["status"] == "finished"
    assert encounter["class"]["code"] == "VR"
    assert encounter["extension"][0]["valueMarkdown"] == "BP controlled"
    items = await http.get(
        "/fhir/ChargeItem",
        params={"patient": world.patient_id, "code": "visit", "entered-date": "ge2026-11-01"},
        headers=headers,
    )
    [found] = [e["resource"] for e in items.json()["entry"]]
    assert found["id"] == entry.id
    assert found["quantity"]["value"] == 20.0
    bad = await http.get("/fhir/ChargeItem", params={"code": "golf"}, headers=headers)
    assert bad.status_code == 400 and "code must be" in bad.text
    everything = await http.get(f"/fhir/Patient/{world.patient_id}/$everything", headers=headers)
    kinds = {e["resource"]["resourceType"] for e in everything.json()["entry"]}
    assert {"Encounter", "ChargeItem"} <= kinds
