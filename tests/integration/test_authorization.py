"""Who may see what, over every route that touches health data, through the real app and
database on both backends: patient A's credentials never reach patient B's record; a clinician
outside the care team is refused until the patient consents, and again once it is revoked;
break-glass opens a record, is audited and shown to the patient.

The matrix is checked against the app's own route list, so a new route that serves patient
data fails here until it is given a row."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select

from medmesh import provisioning
from medmesh.access.audit.audit_writer import AuditWriter
from medmesh.access.erasure import set_legal_hold
from medmesh.access.identity.principals import Role
from medmesh.access.policy.subscribers import SubscriberCheck
from medmesh.app import create_app
from medmesh.care import caregivers
from medmesh.config import Settings
from medmesh.domain.medications import RefillRequest, RefillStatus
from medmesh.domain.visits import Visit
from medmesh.events.model import MESSAGE, READINGS, REFILL, Event
from medmesh.store.consents import CareTeams
from medmesh.store.database import Database
from medmesh.store.medications import RefillRequests
from medmesh.store.schema import audit_log
from medmesh.store.subscriptions import Subscriptions
from medmesh.store.users import Organizations
from medmesh.store.visits import Visits
from tests.accounts_fixtures import Person, sign_in
from tests.conftest import CLINICIAN_PASSWORD, World, make_world
from tests.helpers import AppClient, reading
from tests.imaging_fixtures import Filed, dicom_bytes, file_study


@dataclass(frozen=True, slots=True)
class Cast:
    """Two patients, and the people and systems around them."""

    a: World
    b: World
    a_observation: str
    b_observation: str
    b_alert: str
    b_thread: str  # a message thread of B's, with a message and an attachment
    b_message: str
    b_attachment: str
    b_medication: str  # a medication of B's, with an open refill request
    b_refill: str
    b_schedule: str  # B's clinician's schedule, and B's appointment in it
    b_appointment: str
    b_study: Filed  # an MRI study filed for B
    b_time_entry: str  # B's clinician's time on B's care (a ChargeItem)
    patient_a: dict[str, str]  # A's own account, scope patient/*.cruds
    outsider: dict[str, str]  # a clinician of the same organisation, in no care team
    outsider_id: str
    partner: dict[str, str]  # a partner organisation's backend service, system/*.rs
    admin: dict[str, str]  # the organisation's admin
    # A's care-team clinician holding patient/*.cruds with B as launch patient: issued while
    # on B's care team, kept after leaving it (the token names B; only the policy decides).
    launch_b: dict[str, str]
    # A's caregiver (docs/paging.md#caregivers): A's consent names them for vital signs and
    # alerts; their token is user/*.cruds, and only the policy narrows it.
    caregiver_a: dict[str, str]


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _service_token(database: Database, organization_id: str, scopes: str) -> str:
    return await provisioning.issue_service_token(
        database,
        name=f"{organization_id} integration",
        organization_id=organization_id,
        scopes=scopes,
    )


async def _user_token(
    database: Database, username: str, role: Role, scopes: str, **kw: Any
) -> tuple[str, str]:
    user = await provisioning.create_user(
        database,
        username=username,
        display_name=username.replace("-", " ").title(),
        role=role,
        password=CLINICIAN_PASSWORD,
        **kw,
    )
    return user.id, await provisioning.issue_user_token(database, user_id=user.id, scopes=scopes)


@pytest.fixture
async def http(database_url: str) -> AsyncIterator[AppClient]:
    settings = Settings(
        database_url=database_url, auto_migrate=False, alert_check_interval_seconds=0
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app), AppClient(app) as h:
        yield h


async def _ingest(http: AppClient, world: World, *readings: dict[str, Any]) -> None:
    response = await http.post(
        "/ingest/v1/readings", json={"readings": list(readings)}, headers=world.device_headers
    )
    assert response.status_code == 202, response.text
    assert not response.json()["rejected"]
    await http.settled()  # the rules judge the readings just after the acknowledgement


async def _first(http: httpx.AsyncClient, world: World, path: str, key: str) -> str:
    response = await http.get(
        path, params={"patient": world.patient_id}, headers=world.reader_headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    items = body["entry"] if "entry" in body else body[key]
    return str(items[0]["resource"]["id"] if "entry" in body else items[0]["id"])


@pytest.fixture
async def cast(database: Database, http: AppClient) -> Cast:
    a = await make_world(database, "MRN-A")
    b = await make_world(database, "MRN-B")
    now = datetime.now(UTC)
    for world in (a, b):
        await _ingest(
            http,
            world,
            reading("hr-1", at=now - timedelta(minutes=30)),
            reading("steps-1", "steps", 4000, "{steps}", now - timedelta(minutes=20)),
            reading("bg-1", "blood-glucose", 40, "mg/dL", now - timedelta(minutes=10)),
        )
    _, patient_token = await _user_token(
        database, "patient-a", Role.PATIENT, "patient/*.cruds", patient_id=a.patient_id
    )
    outsider_id, outsider_token = await _user_token(
        database, "dr-outsider", Role.CLINICIAN, "user/*.cruds"
    )
    _, admin_token = await _user_token(database, "org-admin", Role.ORG_ADMIN, "user/*.cruds")
    async with database.write() as conn:
        await Organizations(conn).add("partner", "Partner Hospital")
    partner = await _service_token(database, "partner", "system/*.rs")
    thread = await http.post(
        "/api/v1/threads",
        data={"patient": b.patient_id, "subject": "Wound", "body": "How is the wound today?"},
        files=[("attachment", ("r.pdf", b"%PDF-1.4\n%%EOF\n", "application/pdf"))],
        headers=b.reader_headers,
    )
    assert thread.status_code == 201, thread.text
    (b_message,) = thread.json()["messages"]
    medication = await http.post(
        f"/api/v1/patients/{b.patient_id}/medications",
        json={"name": "Lisinopril 10 mg tablet", "dosage": "1 a day", "refills": 1},
        headers=b.reader_headers,
    )
    assert medication.status_code == 201, medication.text
    refill_id = str(uuid.uuid4())
    async with database.write() as conn:
        await RefillRequests(conn).add(
            RefillRequest(
                id=refill_id,
                patient_id=b.patient_id,
                medication_id=medication.json()["id"],
                status=RefillStatus.OPEN,
                note=None,
                requested_at=now,
                requested_by="b",
            )
        )
    schedule = await http.put(
        "/api/v1/schedule",
        json={
            "timezone": "UTC",
            "hours": [
                {"day": d, "start": "00:00", "end": "23:30"}
                for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
            ],
        },
        headers=b.reader_headers,
    )
    assert schedule.status_code == 200, schedule.text
    slot = (now + timedelta(days=2)).replace(hour=10, minute=0, second=0, microsecond=0)
    appointment = await http.post(
        "/api/v1/appointments",
        json={
            "patient": b.patient_id,
            "schedule": schedule.json()["id"],
            "start": slot.isoformat(),
            "kind": "video",
        },
        headers=b.reader_headers,
    )
    assert appointment.status_code == 201, appointment.text
    minutes_ago = now.replace(microsecond=0) - timedelta(minutes=30)
    time_entry = await http.post(
        "/api/v1/time-entries",
        json={
            "patient": b.patient_id,
            "start": minutes_ago.isoformat(),
            "end": (minutes_ago + timedelta(minutes=10)).isoformat(),
            "reason": "phone call",
        },
        headers=b.reader_headers,
    )
    assert time_entry.status_code == 201, time_entry.text
    async with database.write() as conn:  # B's video visit took place: an Encounter
        await Visits(conn).begin(
            Visit(appointment.json()["id"], b.patient_id, b.clinician_id, minutes_ago)
        )
    await provisioning.add_to_care_team(database, b.patient_id, a.clinician_id, added_by="test")
    launch_b = await provisioning.issue_user_token(
        database, user_id=a.clinician_id, scopes="patient/*.cruds", patient_id=b.patient_id
    )
    async with database.write() as conn:
        assert await CareTeams(conn).remove(b.patient_id, a.clinician_id)
    invited = await caregivers.invite(
        database,
        patient_id=a.patient_id,
        by="patient-a",
        categories={"vital-signs", "alerts"},
        alert_types={"critical"},
        now=now,
    )
    caregiver_id = (
        await caregivers.accept(
            database,
            code=invited.code,
            username="caregiver-a",
            display_name="Caregiver A",
            password=CLINICIAN_PASSWORD,
            now=now,
        )
    ).user_id
    caregiver_token = await provisioning.issue_user_token(
        database, user_id=caregiver_id, scopes="user/*.cruds"
    )
    return Cast(
        a=a,
        b=b,
        a_observation=await _first(http, a, "/fhir/Observation", "entry"),
        b_observation=await _first(http, b, "/fhir/Observation", "entry"),
        b_alert=await _first(http, b, "/api/v1/alerts", "alerts"),
        b_thread=thread.json()["id"],
        b_message=b_message["id"],
        b_attachment=b_message["attachments"][0]["id"],
        b_medication=medication.json()["id"],
        b_refill=refill_id,
        b_schedule=schedule.json()["id"],
        b_appointment=appointment.json()["id"],
        b_study=await file_study(database, "mr", "MRN-B"),
        b_time_entry=time_entry.json()["id"],
        patient_a=_bearer(patient_token),
        outsider=_bearer(outsider_token),
        outsider_id=outsider_id,
        partner=_bearer(partner),
        admin=_bearer(admin_token),
        launch_b=_bearer(launch_b),
        caregiver_a=_bearer(caregiver_token),
    )


def _b_requests(c: Cast) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, extra request arguments) reaching for patient B's data, one per route."""
    b = c.b.patient_id
    subscription = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "watch",
        "criteria": f"Observation?patient={b}",
        "channel": {"type": "rest-hook", "endpoint": "https://example.org/hook"},
    }
    consent = {
        "resourceType": "Consent",
        "status": "active",
        "patient": {"reference": f"Patient/{b}"},
        "provision": {"actor": [{"reference": {"reference": "Organization/partner"}}]},
    }
    return [
        ("GET", f"/fhir/Patient/{b}", {}),
        ("GET", "/fhir/Observation", {"params": {"patient": b}}),
        ("GET", "/fhir/Observation", {"params": {"patient": b, "_include": "Observation:patient"}}),
        ("GET", "/fhir/Observation/$lastn", {"params": {"patient": b}}),
        ("GET", f"/fhir/Observation/{c.b_observation}", {}),
        ("GET", "/fhir/Device", {"params": {"patient": b}}),
        ("GET", f"/fhir/Device/{c.b.device_id}", {}),
        ("GET", "/fhir/Flag", {"params": {"patient": b}}),
        ("GET", f"/fhir/Flag/{c.b_alert}", {}),
        ("GET", "/api/v1/alerts", {"params": {"patient": b}}),
        ("GET", f"/api/v1/alerts/{c.b_alert}", {}),
        ("POST", f"/api/v1/alerts/{c.b_alert}/acknowledge", {}),
        ("POST", f"/api/v1/alerts/{c.b_alert}/resolve", {"json": {"reason": "not mine"}}),
        ("GET", f"/api/v1/patients/{b}/care-plan", {}),
        ("PUT", f"/api/v1/patients/{b}/care-plan", {"json": {}}),
        ("GET", "/api/v1/events", {"params": {"patient": b}}),
        ("POST", "/fhir/Subscription", {"json": subscription}),
        ("GET", "/fhir/Consent", {"params": {"patient": b}}),
        ("POST", "/fhir/Consent", {"json": consent}),
        ("GET", f"/api/v1/patients/{b}/break-glass", {}),
        ("GET", f"/fhir/Patient/{b}/$everything", {}),
        ("POST", f"/api/v1/patients/{b}/erasure", {"json": {"reason": "asked to"}}),
        ("GET", "/fhir/AuditEvent", {"params": {"patient": b}}),
        ("GET", f"/api/v1/patients/{b}/threads", {}),
        ("POST", "/api/v1/threads", {"data": {"patient": b, "subject": "Hi", "body": "Hello"}}),
        ("GET", f"/api/v1/threads/{c.b_thread}", {}),
        ("POST", f"/api/v1/threads/{c.b_thread}/messages", {"data": {"body": "Hello"}}),
        ("POST", f"/api/v1/threads/{c.b_thread}/read", {}),
        ("GET", f"/api/v1/attachments/{c.b_attachment}", {}),
        ("GET", "/fhir/Communication", {"params": {"patient": b}}),
        ("GET", f"/fhir/Communication/{c.b_message}", {}),
        ("GET", f"/api/v1/patients/{b}/medications", {}),
        ("POST", f"/api/v1/patients/{b}/medications", {"json": {"name": "X", "dosage": "1"}}),
        ("POST", f"/api/v1/medications/{c.b_medication}/stop", {}),
        ("POST", f"/api/v1/medications/{c.b_medication}/refill-requests", {"json": {}}),
        ("GET", "/api/v1/refill-requests", {"params": {"patient": b}}),
        ("POST", f"/api/v1/refill-requests/{c.b_refill}/approve", {"json": {"refills": 1}}),
        ("POST", f"/api/v1/refill-requests/{c.b_refill}/deny", {"json": {"reason": "no"}}),
        ("POST", f"/api/v1/refill-requests/{c.b_refill}/visit", {"json": {}}),
        ("GET", "/fhir/MedicationRequest", {"params": {"patient": b}}),
        ("GET", f"/fhir/MedicationRequest/{c.b_medication}", {}),
        (
            "POST",
            "/api/v1/appointments",
            {
                "json": {
                    "patient": b,
                    "schedule": c.b_schedule,
                    "start": (datetime.now(UTC) + timedelta(days=3))
                    .replace(hour=9, minute=0, second=0, microsecond=0)
                    .isoformat(),
                    "kind": "video",
                }
            },
        ),
        ("GET", "/api/v1/appointments", {"params": {"patient": b}}),
        ("POST", f"/api/v1/appointments/{c.b_appointment}/cancel", {}),
        (
            "POST",
            f"/api/v1/appointments/{c.b_appointment}/reschedule",
            {
                "json": {
                    "start": (datetime.now(UTC) + timedelta(days=3))
                    .replace(hour=11, minute=0, second=0, microsecond=0)
                    .isoformat()
                }
            },
        ),
        ("GET", "/fhir/Appointment", {"params": {"patient": b}}),
        ("GET", f"/fhir/Appointment/{c.b_appointment}", {}),
        ("GET", "/fhir/ImagingStudy", {"params": {"patient": b}}),
        ("GET", f"/fhir/ImagingStudy/{c.b_study.study_id}", {}),
        ("GET", "/dicomweb/studies", {"params": {"PatientID": "MRN-B"}}),
        ("GET", f"/dicomweb/studies/{c.b_study.study_uid}/series", {}),
        ("GET", f"{_dicomweb_series(c)}/instances", {}),
        ("GET", f"{_dicomweb_series(c)}/instances/{c.b_study.instance_uid}", {}),
        ("GET", f"{_dicomweb_series(c)}/instances/{c.b_study.instance_uid}/metadata", {}),
        (
            "GET",
            f"{_dicomweb_series(c)}/instances/{c.b_study.instance_uid}/frames/1/rendered",
            {},
        ),
        (
            "POST",
            "/dicomweb/studies",
            {"content": _stow_body(), "headers": {"Content-Type": _STOW_TYPE}},
        ),
        (
            "POST",
            "/api/v1/time-entries",
            {
                "json": {
                    "patient": b,
                    "start": "2026-11-02T09:00:00Z",
                    "end": "2026-11-02T09:10:00Z",
                    "reason": "phone call",
                }
            },
        ),
        ("POST", "/api/v1/time-entries/activity", {"json": {"patient": b}}),
        ("GET", "/api/v1/time-entries", {"params": {"patient": b}}),
        ("PATCH", f"/api/v1/time-entries/{c.b_time_entry}", {"json": {"reason": "other"}}),
        ("GET", f"/api/v1/time-entries/{c.b_time_entry}/history", {}),
        ("GET", "/api/v1/rpm/report", {"params": {"patient": b}}),
        ("GET", "/fhir/Encounter", {"params": {"patient": b}}),
        ("GET", f"/fhir/Encounter/{c.b_appointment}", {}),
        ("GET", "/fhir/ChargeItem", {"params": {"patient": b}}),
        ("GET", f"/fhir/ChargeItem/{c.b_time_entry}", {}),
    ]


_STOW_BOUNDARY = "b-for-the-matrix"
_STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={_STOW_BOUNDARY}'


def _stow_body() -> bytes:
    """One CT instance for patient B, as STOW-RS carries it."""
    part = dicom_bytes("ct", patient_id="MRN-B")
    return (
        f"--{_STOW_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + part
        + f"\r\n--{_STOW_BOUNDARY}--\r\n".encode()
    )


def _dicomweb_series(c: Cast) -> str:
    return f"/dicomweb/studies/{c.b_study.study_uid}/series/{c.b_study.series_uid}"


# Routes that serve no patient's health data, or only the caller's own (checked elsewhere).
NOT_PATIENT_DATA = {
    ("GET", "/healthz"),
    ("GET", "/fhir/metadata"),
    ("POST", "/ingest/v1/readings"),  # devices write their own readings only (test_http_ingest)
    ("POST", "/ingest/v1/readings/{format_name}"),
    ("POST", "/fhir/Observation"),  # FHIR writes: device credentials only (test_fhir_writes)
    ("POST", "/fhir"),
    ("GET", "/fhir/Patient"),  # searches: checked below to return only what may be seen
    ("GET", "/fhir/Subscription"),  # a caller's own subscriptions (test_subscription_api)
    ("GET", "/fhir/Subscription/{subscription_id}"),
    ("DELETE", "/fhir/Subscription/{subscription_id}"),
    ("GET", "/fhir/Consent/{consent_id}"),  # by id: checked below
    ("DELETE", "/fhir/Consent/{consent_id}"),
    ("POST", "/api/v1/break-glass"),  # checked below
    ("PUT", "/api/v1/patients/{patient_id}/care-team/{user_id}"),  # org admins only, below
    ("DELETE", "/api/v1/patients/{patient_id}/care-team/{user_id}"),
    # Bulk export and groups: checked below to carry only what may be seen.
    ("GET", "/fhir/Patient/$export"),
    ("GET", "/fhir/Group/{group_id}/$export"),
    ("GET", "/fhir/Group/{group_id}"),
    ("GET", "/fhir/$export-status/{job_id}"),  # the starter's own jobs (test_bulk_export)
    ("DELETE", "/fhir/$export-status/{job_id}"),
    ("GET", "/fhir/$export-file/{job_id}/{name}"),
    ("GET", "/fhir/AuditEvent/{event_id}"),  # by id: refused like an unknown id (below)
    ("GET", "/api/v1/messages/unread"),  # the caller's own counts (test_care_messages)
    # A clinician's availability names no patient: their own schedule, its free slots.
    ("GET", "/api/v1/me/notifications"),  # the caller's own settings (test_care_notifications)
    ("PUT", "/api/v1/me/notifications"),
    # Paging: the caller's own channels, and rosters of staff (test_paging, no patient data).
    ("GET", "/api/v1/me/paging-channels"),
    ("POST", "/api/v1/me/paging-channels"),
    ("PUT", "/api/v1/me/paging-channels"),
    ("DELETE", "/api/v1/me/paging-channels/{channel_id}"),
    ("POST", "/api/v1/me/paging-channels/{channel_id}/test"),
    ("GET", "/api/v1/oncall/teams"),
    ("GET", "/api/v1/oncall/teams/{name}"),
    ("PUT", "/api/v1/oncall/teams/{name}"),
    ("PUT", "/api/v1/schedule"),
    ("POST", "/api/v1/schedule/exceptions"),
    ("GET", "/api/v1/schedules/{schedule_id}/slots"),
    ("GET", "/fhir/Schedule"),
    ("GET", "/fhir/Schedule/{schedule_id}"),
    ("GET", "/fhir/Slot"),
    ("GET", "/fhir/Slot/{slot_id}"),
    # The imaging quarantine: org admins only, patients of their own organisation (test_dicomweb).
    ("GET", "/api/v1/imaging/quarantine"),
    ("POST", "/api/v1/imaging/quarantine/{item_id}/assign"),
    ("POST", "/api/v1/imaging/quarantine/{item_id}/reject"),
    ("GET", "/api/v1/rpm/program"),  # every visible patient: checked in test_rpm_report
    ("POST", "/oauth/token"),  # public: SMART Backend Services (test_backend_services)
    ("GET", "/.well-known/smart-configuration"),
    ("GET", "/fhir/.well-known/smart-configuration"),
    # SMART App Launch (test_smart_app_launch): the patient picker and the tokens it yields are
    # decided by the policy there; these serve keys, discovery and revocation only.
    ("POST", "/oauth/revoke"),
    ("GET", "/oauth/jwks"),
    ("GET", "/fhir/.well-known/openid-configuration"),
}


def _template(path: str, c: Cast) -> str:
    """The route template a concrete path of `_b_requests` belongs to."""
    replacements = {
        c.b.patient_id: "{patient_id}",
        c.b_observation: "{observation_id}",
        c.b.device_id: "{device_id}",
        c.b_alert: "{alert_id}" if "/api/" in path else "{flag_id}",
        c.b_thread: "{thread_id}",
        c.b_message: "{communication_id}",
        c.b_attachment: "{attachment_id}",
        c.b_medication: "{medication_id}" if "/api/" in path else "{request_id}",
        c.b_refill: "{refill_id}",
        c.b_appointment: "{appointment_id}",
        c.b_study.study_id: "{study_id}",
        c.b_study.study_uid: "{study_uid}",
        c.b_study.series_uid: "{series_uid}",
        c.b_study.instance_uid: "{instance_uid}",
        "/frames/1/": "/frames/{frame}/",
        c.b_appointment: "{encounter_id}" if "Encounter" in path else "{appointment_id}",
        c.b_time_entry: "{item_id}" if "ChargeItem" in path else "{entry_id}",
    }
    for value, name in replacements.items():
        path = path.replace(value, name)
    return path


async def test_every_route_serving_patient_data_is_in_the_matrix(
    http: httpx.AsyncClient, cast: Cast
) -> None:
    app = http._transport.app  # type: ignore[attr-defined]
    routes = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute) and route.include_in_schema
        for method in route.methods
    }
    covered = {(m, _template(p, cast)) for m, p, _ in _b_requests(cast)} | NOT_PATIENT_DATA
    assert routes - covered == set(), "give these routes a row in the authorization matrix"


@pytest.mark.parametrize(
    "who", ["patient_a", "outsider", "partner", "admin", "launch_b", "caregiver_a"]
)
async def test_nobody_without_a_relationship_reaches_patient_b(
    http: httpx.AsyncClient, cast: Cast, who: str
) -> None:
    headers = getattr(cast, who)
    for method, path, extra in _b_requests(cast):
        if who == "admin" and any(
            w in path for w in ("Consent", "break-glass", "Audit", "erasure")
        ):
            continue  # an admin of B's organisation manages consents, the trail, erasure
        arguments = dict(extra)
        sent_headers = {**headers, **arguments.pop("headers", {})}
        response = await http.request(method, path, headers=sent_headers, **arguments)
        assert response.status_code in (403, 404), (who, method, path, response.status_code)
        assert response.json()["resourceType"] == "OperationOutcome", (method, path)
        # Ids the caller sent may come back; nothing else of B's: name, MRN, values.
        said = _UUID.sub("<id>", response.text)
        for secret in (r"MRN-B", r"Doe", r"\b4000\b", r"\b40\b"):
            assert not re.search(secret, said), (method, path, secret, said)


async def test_searches_without_a_patient_return_only_what_the_caller_may_see(
    http: httpx.AsyncClient, cast: Cast
) -> None:
    for headers, expected in (
        (cast.patient_a, {cast.a.patient_id}),
        (cast.outsider, set()),
        (cast.launch_b, set()),  # its launch patient B is no longer in its care team
    ):
        for path in (
            "/fhir/Observation",
            "/fhir/Flag",
            "/fhir/Device",
            "/fhir/Patient",
            "/fhir/ImagingStudy",
        ):
            response = await http.get(path, headers=headers)
            assert response.status_code == 200, (path, response.text)
            text = response.text
            assert cast.b.patient_id not in text, path
            if not expected:
                assert "entry" not in response.json() or not response.json()["entry"], path
        alerts = await http.get("/api/v1/alerts", headers=headers)
        assert {a["patient_id"] for a in alerts.json()["alerts"]} == expected


async def test_a_patient_reads_their_own_record(http: httpx.AsyncClient, cast: Cast) -> None:
    a = cast.a.patient_id
    for path in (f"/fhir/Patient/{a}", f"/fhir/Observation/{cast.a_observation}"):
        assert (await http.get(path, headers=cast.patient_a)).status_code == 200, path
    mine = await http.get("/fhir/Observation", params={"patient": a}, headers=cast.patient_a)
    assert len(mine.json()["entry"]) == 3


async def _consent(
    http: httpx.AsyncClient, cast: Cast, grantee: str, categories: list[str] | None = None
) -> str:
    provision: dict[str, Any] = {
        "type": "permit",
        "actor": [{"reference": {"reference": grantee}}],
        "purpose": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}
        ],
    }
    if categories:
        provision["code"] = [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": c,
                    }
                ]
            }
            for c in categories
        ]
    body = {
        "resourceType": "Consent",
        "status": "active",
        "patient": {"reference": f"Patient/{cast.a.patient_id}"},
        "provision": provision,
    }
    response = await http.post("/fhir/Consent", json=body, headers=cast.patient_a)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _observations(
    http: httpx.AsyncClient, cast: Cast, headers: dict[str, str]
) -> httpx.Response:
    return await http.get(
        "/fhir/Observation", params={"patient": cast.a.patient_id}, headers=headers
    )


async def test_consent_lets_an_outsider_in_and_revocation_shuts_them_out_on_the_next_request(
    http: httpx.AsyncClient, cast: Cast
) -> None:
    assert (await _observations(http, cast, cast.outsider)).status_code == 403
    consent_id = await _consent(http, cast, f"Practitioner/{cast.outsider_id}")
    allowed = await _observations(http, cast, cast.outsider)
    assert allowed.status_code == 200
    assert len(allowed.json()["entry"]) == 3
    revoked = await http.delete(f"/fhir/Consent/{consent_id}", headers=cast.patient_a)
    assert revoked.status_code == 200
    assert revoked.json()["status"] == "inactive"
    assert (await _observations(http, cast, cast.outsider)).status_code == 403
    # The outsider cannot revoke, nor read the consent record itself.
    assert (await http.get(f"/fhir/Consent/{consent_id}", headers=cast.outsider)).status_code == 404


async def test_a_consent_limited_to_vital_signs_hides_other_categories(
    http: httpx.AsyncClient, cast: Cast
) -> None:
    await _consent(http, cast, "Organization/partner", ["vital-signs"])
    found = (await _observations(http, cast, cast.partner)).json()
    codes = {e["resource"]["code"]["coding"][0]["code"] for e in found["entry"]}
    assert codes == {"8867-4"}  # heart rate; steps (activity) and glucose (laboratory) hidden
    flags = await http.get(
        "/fhir/Flag", params={"patient": cast.a.patient_id}, headers=cast.partner
    )
    assert flags.status_code == 200
    assert "entry" not in flags.json() or not flags.json()["entry"]


async def test_a_caregiver_reads_the_granted_categories_and_writes_nothing(
    http: httpx.AsyncClient, cast: Cast
) -> None:
    found = (await _observations(http, cast, cast.caregiver_a)).json()
    codes = {e["resource"]["code"]["coding"][0]["code"] for e in found["entry"]}
    assert codes == {"8867-4"}  # heart rate only: steps and glucose are not granted
    flags = await http.get(
        "/fhir/Flag", params={"patient": cast.a.patient_id}, headers=cast.caregiver_a
    )
    assert flags.status_code == 200  # alerts are granted
    write = await http.post(
        f"/api/v1/patients/{cast.a.patient_id}/medications",
        json={"name": "Insulin", "dosage": "10 units"},
        headers=cast.caregiver_a,
    )
    assert write.status_code in (403, 404), write.text
    plan = await http.put(
        f"/api/v1/patients/{cast.a.patient_id}/care-plan",
        json={"primary_clinician": None},
        headers=cast.caregiver_a,
    )
    assert plan.status_code in (403, 404), plan.text
    consents = await http.get(
        "/fhir/Consent", params={"patient": cast.a.patient_id}, headers=cast.caregiver_a
    )
    assert consents.status_code in (403, 404)  # grantees do not manage consents


async def test_care_resources_read_by_id_are_hidden_from_a_consent_limited_to_categories(
    http: httpx.AsyncClient, cast: Cast
) -> None:
    """Messages, medications and appointments belong to no data category: a consent limited
    to some categories reads none of them by id (404, as if unknown), the care team does."""
    b = cast.b.patient_id
    body = {
        "resourceType": "Consent",
        "status": "active",
        "patient": {"reference": f"Patient/{b}"},
        "provision": {
            "type": "permit",
            "actor": [{"reference": {"reference": "Organization/partner"}}],
            "code": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "vital-signs",
                        }
                    ]
                }
            ],
        },
    }
    granted = await http.post("/fhir/Consent", json=body, headers=cast.admin)
    assert granted.status_code == 201, granted.text
    assert (await _observations_of(http, b, cast.partner)).status_code == 200
    for path in (
        f"/fhir/Communication/{cast.b_message}",
        f"/fhir/MedicationRequest/{cast.b_medication}",
        f"/fhir/Appointment/{cast.b_appointment}",
    ):
        hidden = await http.get(path, headers=cast.partner)
        assert hidden.status_code == 404, path
        assert hidden.json()["resourceType"] == "OperationOutcome"
        shown = await http.get(path, headers=cast.b.reader_headers)
        assert shown.status_code == 200, path
        assert shown.json()["id"] == path.rsplit("/", 1)[1]


async def _observations_of(
    http: httpx.AsyncClient, patient_id: str, headers: dict[str, str]
) -> httpx.Response:
    return await http.get("/fhir/Observation", params={"patient": patient_id}, headers=headers)


def _included(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    return [e["resource"] for e in entries if e["search"]["mode"] == "include"]


async def test_include_revinclude_and_lastn_bring_in_only_what_the_caller_may_see(
    http: httpx.AsyncClient, cast: Cast, database: Database
) -> None:
    a, b = cast.a.patient_id, cast.b.patient_id
    includes = [("patient", a), ("_include", "Observation:patient")]
    includes.append(("_include", "Observation:device"))
    kinds = {
        r["resourceType"]
        for r in _included(
            await http.get("/fhir/Observation", params=includes, headers=cast.a.reader_headers)
        )
    }
    assert kinds == {"Patient", "Device"}
    # A token whose scopes allow Observations only: the Patient and Device are left out.
    narrow = await _service_token(database, "default", "system/Observation.rs")
    found = await http.get("/fhir/Observation", params=includes, headers=_bearer(narrow))
    assert _included(found) == [] and len(found.json()["entry"]) == 3
    # Under a consent limited to vital signs, what the partner's revincludes bring is limited
    # the same way: heart rate only, and no Flags (alerts are another category).
    await _consent(http, cast, "Organization/partner", ["vital-signs"])
    revincludes = [("_revinclude", "Observation:patient"), ("_revinclude", "Flag:patient")]
    response = await http.get("/fhir/Patient", params=revincludes, headers=cast.partner)
    included = _included(response)
    assert [r["code"]["coding"][0]["code"] for r in included] == ["8867-4"]
    assert b not in response.text
    async with database.read() as conn:
        audited = (
            (
                await conn.execute(
                    select(audit_log.c.resource_type).where(
                        audit_log.c.actor_name == "partner integration",
                        audit_log.c.patient_id == a,
                        audit_log.c.subtype == "search",
                    )
                )
            )
            .scalars()
            .all()
        )
    assert {"Patient", "Observation"} <= set(audited)
    # $lastn without a patient covers only the caller's own record.
    last = await http.get("/fhir/Observation/$lastn", headers=cast.patient_a)
    assert last.status_code == 200
    assert {e["resource"]["subject"]["reference"] for e in last.json()["entry"]} == {f"Patient/{a}"}
    assert b not in last.text


async def test_break_glass_opens_a_record_is_audited_and_shown_to_the_patient(
    http: httpx.AsyncClient, cast: Cast, database: Database
) -> None:
    short = await http.post(
        "/api/v1/break-glass",
        json={"patient": cast.a.patient_id, "reason": "ER"},
        headers=cast.outsider,
    )
    assert short.status_code == 400  # a reason is required, of some substance
    opened = await http.post(
        "/api/v1/break-glass",
        json={"patient": cast.a.patient_id, "reason": "unconscious in the emergency room"},
        headers=cast.outsider,
    )
    assert opened.status_code == 201, opened.text
    grant = opened.json()["id"]
    assert (await _observations(http, cast, cast.outsider)).status_code == 200
    async with database.read() as conn:
        rows = (
            await conn.execute(
                select(audit_log.c.subtype, audit_log.c.purpose, audit_log.c.basis).where(
                    audit_log.c.actor_id == cast.outsider_id,
                    audit_log.c.patient_id == cast.a.patient_id,
                    audit_log.c.outcome == "0",
                )
            )
        ).all()
    assert ("break-glass", "ETREAT", f"break-glass:{grant}") in rows
    assert ("search", "ETREAT", f"break-glass:{grant}") in rows
    shown = await http.get(
        f"/api/v1/patients/{cast.a.patient_id}/break-glass", headers=cast.patient_a
    )
    (access,) = shown.json()["accesses"]
    assert access["clinician"] == "Dr Outsider"
    assert access["reason"] == "unconscious in the emergency room"
    # Patients and services cannot break the glass.
    for headers in (cast.patient_a, cast.partner):
        refused = await http.post(
            "/api/v1/break-glass",
            json={"patient": cast.b.patient_id, "reason": "just curious, honestly"},
            headers=headers,
        )
        assert refused.status_code == 403


async def test_refusals_are_audited_too(
    http: httpx.AsyncClient, cast: Cast, database: Database
) -> None:
    await http.get(f"/fhir/Patient/{cast.b.patient_id}", headers=cast.patient_a)
    async with database.read() as conn:
        refused = (
            await conn.execute(
                select(audit_log.c.outcome, audit_log.c.basis).where(
                    audit_log.c.patient_id == cast.b.patient_id,
                    audit_log.c.resource_type == "Patient",
                    audit_log.c.outcome == "4",
                )
            )
        ).all()
    assert ("4", "not-own-record") in refused


async def test_an_organisation_admin_manages_care_teams_but_reads_no_health_data(
    http: httpx.AsyncClient, cast: Cast
) -> None:
    assert (await _observations(http, cast, cast.admin)).status_code == 403
    consents = await http.get(
        "/fhir/Consent", params={"patient": cast.a.patient_id}, headers=cast.admin
    )
    assert consents.status_code == 200
    path = f"/api/v1/patients/{cast.a.patient_id}/care-team/{cast.outsider_id}"
    assert (await http.put(path, json={"role": "nurse"}, headers=cast.outsider)).status_code == 403
    assert (await http.put(path, json={"role": "nurse"}, headers=cast.admin)).status_code == 204
    assert (await _observations(http, cast, cast.outsider)).status_code == 200
    assert (await http.delete(path, headers=cast.admin)).status_code == 204
    assert (await _observations(http, cast, cast.outsider)).status_code == 403


async def test_a_token_whose_scopes_omit_a_resource_type_is_refused(
    http: httpx.AsyncClient, cast: Cast, database: Database
) -> None:
    narrow = await _service_token(database, "default", "system/Patient.rs")
    response = await http.get(
        "/fhir/Observation", params={"patient": cast.a.patient_id}, headers=_bearer(narrow)
    )
    assert response.status_code == 403
    assert "scopes" in response.json()["issue"][0]["diagnostics"]
    ok = await http.get(f"/fhir/Patient/{cast.a.patient_id}", headers=_bearer(narrow))
    assert ok.status_code == 200


async def test_webhook_notifications_stop_when_the_consent_behind_them_is_revoked(
    http: httpx.AsyncClient, cast: Cast, database: Database
) -> None:
    consent_id = await _consent(http, cast, f"Practitioner/{cast.outsider_id}")
    body = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "watch",
        "criteria": f"Observation?patient={cast.a.patient_id}",
        "channel": {"type": "rest-hook", "endpoint": "https://example.org/hook"},
    }
    created = await http.post("/fhir/Subscription", json=body, headers=cast.outsider)
    assert created.status_code == 201, created.text
    async with database.read() as conn:
        subscription = await Subscriptions(conn).get(created.json()["id"])
    event = Event(READINGS, cast.a.patient_id, {"count": 1, "codes": ["8867-4"]})
    writer = AuditWriter(database)
    check = SubscriberCheck(database, writer)
    assert await check(subscription, event)
    await http.delete(f"/fhir/Consent/{consent_id}", headers=cast.patient_a)
    assert not await check(subscription, event)
    await writer.aclose()


async def test_care_notifications_are_decided_per_event_on_the_whole_record(
    http: httpx.AsyncClient, cast: Cast, database: Database
) -> None:
    """A MedicationRequest or Communication subscriber is told of each event only while the
    policy lets them see the patient's whole record: a consent limited to some categories
    covers no care data."""
    whole = await _consent(http, cast, f"Practitioner/{cast.outsider_id}")
    subscriptions = []
    for criteria in (
        f"MedicationRequest?patient={cast.a.patient_id}",
        f"Communication?patient={cast.a.patient_id}",
    ):
        body = {
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "follow renewals",
            "criteria": criteria,
            "channel": {"type": "rest-hook", "endpoint": "https://example.org/hook"},
        }
        created = await http.post("/fhir/Subscription", json=body, headers=cast.outsider)
        assert created.status_code == 201, created.text
        async with database.read() as conn:
            subscriptions.append(await Subscriptions(conn).get(created.json()["id"]))
    events = [
        Event(
            REFILL,
            cast.a.patient_id,
            {
                "refill_request_id": "r",
                "medication_id": "m",
                "status": "approved",
                "renewal_id": "n",
            },
        ),
        Event(MESSAGE, cast.a.patient_id, {"thread_id": "t", "message_id": "x", "side": "patient"}),
    ]
    writer = AuditWriter(database)
    check = SubscriberCheck(database, writer)
    for subscription, event in zip(subscriptions, events, strict=True):
        assert await check(subscription, event)
    await http.delete(f"/fhir/Consent/{whole}", headers=cast.patient_a)
    await _consent(http, cast, f"Practitioner/{cast.outsider_id}", ["vital-signs"])
    for subscription, event in zip(subscriptions, events, strict=True):
        assert not await check(subscription, event)
    await writer.aclose()


async def test_a_patient_sees_who_looked_at_their_record_and_why(
    http: httpx.AsyncClient, cast: Cast
) -> None:
    await _observations(http, cast, cast.a.reader_headers)  # their care-team clinician
    await http.post(
        "/api/v1/break-glass",
        json={"patient": cast.a.patient_id, "reason": "unconscious in the emergency room"},
        headers=cast.outsider,
    )
    await _observations(http, cast, cast.outsider)
    await _observations(http, cast, cast.patient_a)  # their own looking is not listed
    await sign_in(http, Person("", "patient-a", CLINICIAN_PASSWORD, None))
    page = await http.get("/me")
    assert page.status_code == 200
    rows = re.findall(
        r"<tr>\s*<td><time[^>]*>[^<]*</time></td>\s*<td>([^<]*)</td>\s*<td>(.*?)</td>",
        page.text,
        re.S,
    )
    people = [who for who, _ in rows]
    assert "Dr Outsider" in people and "dr test" in people
    assert "Patient A" not in people
    emergency = [what for who, what in rows if who == "Dr Outsider"]
    assert any("(emergency)" in what for what in emergency)
    assert "unconscious in the emergency room" in page.text


async def _exported_patients(
    http: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> set[str]:
    kicked = await http.get(path, headers={**headers, "Prefer": "respond-async"})
    assert kicked.status_code == 202, kicked.text
    status = kicked.headers["content-location"].replace("http://test", "")
    for _ in range(500):
        answer = await http.get(status, headers=headers)
        if answer.status_code == 200:
            break
        assert answer.status_code == 202, answer.text
        await asyncio.sleep(0.02)
    found: set[str] = set()
    for output in answer.json()["output"]:
        ndjson = await http.get(output["url"].replace("http://test", ""), headers=headers)
        for line in ndjson.text.splitlines():
            resource = json.loads(line)
            if resource["resourceType"] == "Patient":
                found.add(resource["id"])
            elif "subject" in resource:
                found.add(resource["subject"]["reference"].split("/")[1])
    return found


async def test_bulk_export_and_groups_carry_only_what_the_caller_may_see(
    http: httpx.AsyncClient, cast: Cast
) -> None:
    a, b = cast.a.patient_id, cast.b.patient_id
    for headers, expected in (
        (cast.patient_a, {a}),
        (cast.outsider, set()),
        (cast.partner, set()),
        (cast.a.reader_headers, {a}),
        (cast.launch_b, set()),
    ):
        for path in ("/fhir/Patient/$export", "/fhir/Group/default/$export"):
            assert await _exported_patients(http, path, headers) == expected, (path, expected)
        group = (await http.get("/fhir/Group/default", headers=headers)).json()
        members = {m["entity"]["reference"] for m in group.get("member", [])}
        assert members == {f"Patient/{p}" for p in expected}
    assert b not in (await http.get(f"/fhir/Patient/{a}/$everything", headers=cast.patient_a)).text


async def test_an_organisation_admin_erases_a_record_unless_it_is_on_legal_hold(
    http: httpx.AsyncClient, cast: Cast, database: Database
) -> None:
    a = cast.a.patient_id
    path = f"/api/v1/patients/{a}/erasure"
    await set_legal_hold(database, a, True)
    held = await http.post(path, json={"reason": "patient's request"}, headers=cast.admin)
    assert held.status_code == 409
    assert (await http.get(f"/fhir/Patient/{a}", headers=cast.a.reader_headers)).status_code == 200
    await set_legal_hold(database, a, False)
    erased = await http.post(path, json={"reason": "patient's request"}, headers=cast.admin)
    assert erased.status_code == 200, erased.text
    certificate = erased.json()
    assert certificate["document"]["patient_id"] == a and certificate["signature"]
    assert (await http.get(f"/fhir/Patient/{a}", headers=cast.a.reader_headers)).status_code == 404
    async with database.read() as conn:
        subtypes = (
            await conn.execute(
                select(audit_log.c.outcome, audit_log.c.basis).where(
                    audit_log.c.patient_id == a, audit_log.c.subtype == "erase"
                )
            )
        ).all()
    assert ("4", "legal-hold") in subtypes and ("0", "organization-admin") in subtypes


async def test_ids_no_record_could_have_are_not_found_not_errors(
    http: httpx.AsyncClient, cast: Cast
) -> None:
    odd = quote("j\x87\tI\xf8\x95\x12r\x9d\x92_r" + "x" * 50, safe="")  # control chars, long
    for path in (
        "/fhir/Patient/{}",
        "/fhir/Observation/{}",
        "/fhir/Device/{}",
        "/fhir/Flag/{}",
        "/fhir/AuditEvent/{}",
        "/fhir/Consent/{}",
        "/fhir/Subscription/{}",
        "/fhir/Group/{}",
        "/fhir/Patient/{}/$everything",
        "/api/v1/alerts/{}",
        "/api/v1/patients/{}/care-plan",
        "/api/v1/patients/{}/break-glass",
    ):
        response = await http.get(path.format(odd), headers=cast.a.reader_headers)
        assert response.status_code in (400, 403, 404), (path, response.status_code)
    searched = await http.get(
        "/fhir/Observation", params={"patient": unquote(odd)}, headers=cast.a.reader_headers
    )
    assert searched.status_code in (400, 403)
    glass = await http.post(
        "/api/v1/break-glass",
        json={"patient": "x" * 60, "reason": "a long enough reason"},
        headers=cast.outsider,
    )
    assert glass.status_code == 404
