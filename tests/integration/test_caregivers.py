"""Caregivers on both backends (docs/paging.md#caregivers): the patient invites from /me, the
caregiver accepts the single-use code, makes their own account and enrols TOTP at the first
sign-in, sees only what the consent grants (no other patient, no other category, no writes),
is paged by e-mail for a critical glucose (no health data) and marks their own page seen
without acknowledging the clinical alert; revoking stops access and pending pages at once;
erasing the patient removes the links and consents."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from medmesh import provisioning
from medmesh.access.identity.principals import ActorKind, Principal, Role
from medmesh.access.policy.decision import decide
from medmesh.access.policy.scopes import Interaction, Scopes
from medmesh.domain.alerts import AlertStatus
from medmesh.store.alerts import Alerts
from medmesh.store.audit_log import AuditLog
from medmesh.store.caregivers import Caregivers
from medmesh.store.database import Database
from medmesh.store.schema import caregiver_invitations, caregivers, consents
from medmesh.store.users import Users
from tests.accounts_fixtures import (
    STAFF_PASSWORD,
    Person,
    code_for,
    csrf_of,
    enrolment_secret,
    make_patient_account,
    sign_in,
    submit_code,
    submit_password,
)
from tests.helpers import AppClient
from tests.integration.test_paging import (
    LINK,
    Ward,
    _channel,
    _critical_reading,
    _tick,
    _wait,
    sink,
    ward,
)
from tests.smtp_sink import Sink, words_of_page

__all__ = ["sink", "ward"]  # fixtures, used by name

CODE = re.compile(r'<code id="invitation-code">([^<]+)</code>')
CAREGIVER_MAIL = "mum@home.example"


@pytest.fixture
async def patient(ward: Ward, database: Database) -> AsyncIterator[AppClient]:
    """Jane Doe signed in to her /me in a browser of her own."""
    person = await make_patient_account(database, ward.world.patient_id)
    async with AppClient(ward.http.app) as http:
        await sign_in(http, person)
        yield http


async def _invite(patient: AppClient, categories: list[str], alert_types: list[str]) -> str:
    me = await patient.get("/me")
    assert "Invite a caregiver" in me.text
    made = await patient.post(
        "/me/caregivers",
        data={
            "csrf_token": csrf_of(me.text),
            "category": categories,
            "alert_type": alert_types,
        },
    )
    assert made.status_code == 200, made.text
    found = CODE.search(made.text)
    assert found, made.text
    return found.group(1)


async def _accept(http: AppClient, code: str, username: str = "mum") -> Person:
    """Accept the invitation and sign in for the first time, enrolling TOTP."""
    form = await http.get(f"/caregiver/accept?code={code}")
    accepted = await http.post(
        "/caregiver/accept",
        data={
            "csrf_token": csrf_of(form.text),
            "code": code,
            "username": username,
            "display_name": "Mum",
            "email": CAREGIVER_MAIL,
            "password": STAFF_PASSWORD,
        },
    )
    assert accepted.status_code == 303, accepted.text
    first = await submit_password(http, username, STAFF_PASSWORD)
    assert first.headers["location"] == "/login/enrol"  # a second factor, like staff
    secret = enrolment_secret((await http.get("/login/enrol")).text)
    person = Person("", username, STAFF_PASSWORD, secret)
    enrolled = await submit_code(http, code_for(person), "/login/enrol")
    assert enrolled.status_code == 303 and enrolled.headers["location"] == "/caregiving"
    return person


async def _link_id(database: Database, patient_id: str) -> str:
    async with database.read() as conn:
        (link,) = await Caregivers(conn).of_patient(patient_id)
    return link.id


async def _revoke(patient: AppClient, link_id: str) -> None:
    me = await patient.get("/me")
    assert "Stop sharing with Mum" in me.text
    done = await patient.post(
        f"/me/caregivers/{link_id}/revoke", data={"csrf_token": csrf_of(me.text)}
    )
    assert done.status_code == 303, done.text


async def test_a_caregiver_sees_what_was_granted_is_paged_and_loses_access_on_revocation(
    ward: Ward, sink: Sink, patient: AppClient, database: Database
) -> None:
    pid = ward.world.patient_id
    other = await provisioning.create_patient(
        database, family="Roe", given="Richard", identifier="MRN-OTHER"
    )
    code = await _invite(patient, ["vital-signs", "alerts"], ["critical"])
    async with AppClient(ward.http.app) as mum:
        await _accept(mum, code)
        # The code works once.
        again = await mum.post(
            "/caregiver/accept",
            data={
                "csrf_token": csrf_of((await mum.get("/caregiver/accept")).text),
                "code": code,
                "username": "someone.else",
                "display_name": "Someone",
                "email": "else@home.example",
                "password": STAFF_PASSWORD,
            },
        )
        assert again.status_code == 410 and "unknown, used or expired" in again.text

        listed = await mum.get("/caregiving")
        assert "Jane Doe" in listed.text and "Richard" not in listed.text
        readings = await mum.get(f"/caregiving/{pid}")
        assert readings.status_code == 200 and "Jane Doe: readings" in readings.text
        assert (await mum.get(f"/caregiving/{other.id}")).status_code == 404
        assert (await mum.get("/me")).headers.get("location") == "/caregiving"
        assert (await mum.get("/")).status_code in (303, 307)  # not the clinicians' panel

        # A critical glucose pages the caregiver's mailbox, saying nothing of it.
        await _channel(ward, ward.oncall, "email", "oncall@clinic.example")
        await ward.http.put(
            f"/api/v1/patients/{pid}/care-plan",
            json={"primary_clinician": ward.oncall.user_id},
            headers=ward.world.reader_headers,
        )
        alert_id = await _critical_reading(ward)
        await _tick(ward, timedelta(seconds=6))
        await _wait(sink, 2)
        (mail,) = [m for m in sink.received if m["To"] == CAREGIVER_MAIL]
        text = mail.as_string()
        assert "A critical alert for someone you care for is waiting" in text
        for secret in ("lucose", "40", "Jane", "Doe", pid):
            assert secret not in words_of_page(mail).replace(alert_id, ""), secret
        found = LINK.search(text)
        assert found
        opened = await mum.get(found.group(2))
        assert opened.status_code == 200 and "Low glucose" in opened.text
        assert "only they can acknowledge" in opened.text
        snooze = await mum.post(
            f"{found.group(2)}/snooze",
            data={"csrf_token": csrf_of(opened.text), "reason": "x", "minutes": "15"},
        )
        assert snooze.status_code == 403
        seen = await mum.post(
            f"{found.group(2)}/acknowledge", data={"csrf_token": csrf_of(opened.text)}
        )
        assert seen.status_code == 200 and "marked your email page as seen" in seen.text
        async with database.read() as conn:
            assert (await Alerts(conn).get(alert_id)).status is AlertStatus.OPEN

        # Revoked: the very next request is refused.
        await _revoke(patient, await _link_id(database, pid))
        assert (await mum.get(f"/caregiving/{pid}")).status_code == 404
        assert "Nobody shares their readings with you now" in (await mum.get("/caregiving")).text
    async with database.read() as conn:
        trail = await AuditLog(conn).search(patient_id=pid, count=500)
    seen = {(r.resource_type, r.subtype, r.outcome) for r in trail}
    # The invitation, its acceptance (by the caregiver, who makes the consent) and the
    # revocation are audited as consent management, and the caregiver's looks (and the refused
    # one after revocation) as any access to the record.
    assert {("Consent", "create", "0"), ("Consent", "update", "0")} <= seen
    assert any(
        (r.actor_name, r.resource_type, r.subtype, r.outcome) == ("Mum", "Consent", "create", "0")
        for r in trail
    )
    assert any(r.actor_name == "Mum" and r.outcome != "0" for r in trail)
    assert any(r.actor_name == "Mum" and r.outcome == "0" for r in trail)


async def test_the_policy_lets_a_caregiver_read_granted_categories_only_and_write_nothing(
    ward: Ward, patient: AppClient, database: Database
) -> None:
    pid = ward.world.patient_id
    code = await _invite(patient, ["activity"], [])
    async with AppClient(ward.http.app) as mum:
        await _accept(mum, code)
        page = await mum.get(f"/caregiving/{pid}")
        assert page.status_code == 200
        assert "Glucose" not in page.text and "Heart rate" not in page.text
    async with database.read() as conn:
        user = await Users(conn).find_by_username("mum")
        assert user is not None
        principal = Principal(
            kind=ActorKind.USER,
            id=user.id,
            name="Mum",
            role=Role.CAREGIVER,
            organization_id=user.organization_id,
            scopes=Scopes.parse("user/*.cruds"),
        )
        now = datetime.now(UTC)
        read = await decide(conn, principal, pid, "Observation", Interaction.READ, now=now)
        assert read.permitted and read.categories == frozenset({"activity"})
        write = await decide(conn, principal, pid, "Observation", Interaction.CREATE, now=now)
        assert not write.permitted and write.basis == "caregiver-reads-only"
        flag = await decide(conn, principal, pid, "Flag", Interaction.UPDATE, now=now)
        assert not flag.permitted
    # Not in the alert types: no caregiver page for a critical alert.
    async with database.read() as conn:
        (link,) = await Caregivers(conn).of_patient(pid)
    assert link.alert_types == frozenset()


async def test_revoking_before_a_held_page_goes_out_sends_the_caregiver_nothing(
    ward: Ward, sink: Sink, patient: AppClient, database: Database
) -> None:
    pid = ward.world.patient_id
    code = await _invite(patient, ["vital-signs", "alerts"], ["critical"])
    async with AppClient(ward.http.app) as mum:
        await _accept(mum, code)
    await _channel(ward, ward.oncall, "email", "oncall@clinic.example")
    await ward.http.put(
        f"/api/v1/patients/{pid}/care-plan",
        json={"primary_clinician": ward.oncall.user_id},
        headers=ward.world.reader_headers,
    )
    await _critical_reading(ward)  # pages are held 5 seconds for others to join
    await _revoke(patient, await _link_id(database, pid))
    await _tick(ward, timedelta(seconds=6))
    await _wait(sink, 1)
    await _tick(ward, timedelta(seconds=6))
    assert [m["To"] for m in sink.received] == ["oncall@clinic.example"]


async def test_erasure_removes_caregiver_links_invitations_and_consents(
    ward: Ward, patient: AppClient, database: Database
) -> None:
    pid = ward.world.patient_id
    code = await _invite(patient, ["vital-signs"], ["critical"])
    await _invite(patient, ["alerts"], [])  # one left pending
    async with AppClient(ward.http.app) as mum:
        await _accept(mum, code)
        erased = await ward.http.post(
            f"/api/v1/patients/{pid}/erasure", json={"reason": "asked to"}, headers=ward.admin
        )
        assert erased.status_code == 200, erased.text
        async with database.read() as conn:
            for table in (caregivers, caregiver_invitations, consents):
                rows = await conn.execute(select(table.c.id).where(table.c.patient_id == pid))
                assert rows.all() == [], table.name
        assert "Nobody shares" in (await mum.get("/caregiving")).text
