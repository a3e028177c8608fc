"""Bearer tokens issued to accounts and services, and what they resolve to (`Principal`), on
both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from medmesh import provisioning
from medmesh.access.identity.bearer import principal_for_token
from medmesh.access.identity.credentials import hash_secret
from medmesh.access.identity.principals import ActorKind, Principal, Role
from medmesh.access.policy.grants import ScopeNotAllowed
from medmesh.access.policy.scopes import InvalidScope, Scopes
from medmesh.domain.errors import Conflict, NotFound
from medmesh.store.database import Database
from medmesh.store.tokens import ApiTokens
from medmesh.store.users import Organizations, Users

PASSWORD = "correct horse battery staple"


async def resolve(database: Database, token: str, now: datetime | None = None) -> Principal | None:
    async with database.read() as conn:
        return await principal_for_token(conn, token, now=now or datetime.now(UTC))


async def clinician(database: Database, username: str = "dr.ade") -> provisioning.UserAccount:
    return await provisioning.create_user(
        database, username=username, display_name="Dr Ade Bello", role=Role.CLINICIAN,
        password=PASSWORD,
    )  # fmt: skip


async def patient_account(database: Database) -> provisioning.UserAccount:
    patient = await provisioning.create_patient(
        database, family="Okafor", given="Ada", identifier="M1"
    )
    return await provisioning.create_user(
        database, username="ada", display_name="Ada Okafor", role=Role.PATIENT,
        password=PASSWORD, patient_id=patient.id,
    )  # fmt: skip


async def test_a_clinicians_token_resolves_to_the_clinician_with_the_scopes_granted(
    database: Database,
) -> None:
    account = await clinician(database)
    token = await provisioning.issue_user_token(database, user_id=account.id, scopes="user/*.rs")
    principal = await resolve(database, token)
    assert principal is not None
    assert (principal.kind, principal.id, principal.name) == (
        ActorKind.USER,
        account.id,
        "Dr Ade Bello",
    )
    assert principal.role is Role.CLINICIAN and principal.organization_id == "default"
    assert principal.scopes == Scopes.parse("user/*.rs")
    assert principal.patient_id is None and principal.purpose == "TREAT"
    async with database.read() as conn:
        record = await ApiTokens(conn).find_by_hash(hash_secret(token))
    assert record is not None and principal.token_id == record.id


async def test_a_patients_token_opens_their_own_record_only(database: Database) -> None:
    account = await patient_account(database)
    token = await provisioning.issue_user_token(
        database, user_id=account.id, scopes="patient/Observation.rs patient/Patient.r"
    )
    principal = await resolve(database, token)
    assert principal is not None and principal.role is Role.PATIENT
    assert principal.patient_id == account.patient_id
    assert str(principal.scopes) == "patient/Observation.rs patient/Patient.r"


async def test_a_patient_account_cannot_be_given_user_or_system_scopes(database: Database) -> None:
    account = await patient_account(database)
    for scopes in ("user/*.rs", "patient/Observation.rs system/Observation.rs"):
        with pytest.raises(ScopeNotAllowed, match="patient/ scopes only"):
            await provisioning.issue_user_token(database, user_id=account.id, scopes=scopes)


async def test_a_patient_accounts_token_cannot_open_another_patients_record(
    database: Database,
) -> None:
    account = await patient_account(database)
    other = await provisioning.create_patient(database, family="Doe", given="Jo", identifier="M2")
    with pytest.raises(ScopeNotAllowed, match="only their own record"):
        await provisioning.issue_user_token(
            database, user_id=account.id, scopes="patient/*.rs", patient_id=other.id
        )


async def test_a_clinicians_patient_scopes_need_a_launch_patient(database: Database) -> None:
    account = await clinician(database)
    with pytest.raises(ScopeNotAllowed, match="need a launch patient"):
        await provisioning.issue_user_token(database, user_id=account.id, scopes="patient/*.rs")
    with pytest.raises(NotFound):
        await provisioning.issue_user_token(
            database, user_id=account.id, scopes="patient/*.rs", patient_id="no-such-patient"
        )
    patient = await provisioning.create_patient(database, family="Doe", given="Jo", identifier="M3")
    with pytest.raises(ScopeNotAllowed, match="not on the patient's care team"):
        await provisioning.issue_user_token(
            database, user_id=account.id, scopes="patient/*.rs", patient_id=patient.id
        )
    await provisioning.add_to_care_team(database, patient.id, account.id, added_by="test")
    token = await provisioning.issue_user_token(
        database, user_id=account.id, scopes="patient/*.rs", patient_id=patient.id
    )
    principal = await resolve(database, token)
    assert principal is not None and principal.patient_id == patient.id


async def test_a_clinician_cannot_hold_system_scopes(database: Database) -> None:
    account = await clinician(database)
    with pytest.raises(ScopeNotAllowed, match="not system/"):
        await provisioning.issue_user_token(database, user_id=account.id, scopes="system/*.rs")
    with pytest.raises(InvalidScope, match="not a SMART scope"):
        await provisioning.issue_user_token(
            database, user_id=account.id, scopes="user/observation.rs"
        )


async def test_an_unknown_revoked_or_empty_token_resolves_to_nobody(database: Database) -> None:
    account = await clinician(database)
    token = await provisioning.issue_user_token(database, user_id=account.id, scopes="user/*.rs")
    assert await resolve(database, "mmt_not-a-token") is None
    assert await resolve(database, "  ") is None
    async with database.write() as conn:
        tokens = ApiTokens(conn)
        record = await tokens.find_by_hash(hash_secret(token))
        assert record is not None and await tokens.revoke(record.id)
    assert await resolve(database, token) is None


async def test_a_token_stops_working_when_it_expires(database: Database) -> None:
    account = await clinician(database)
    issued = datetime.now(UTC)
    token = await provisioning.issue_user_token(
        database, user_id=account.id, scopes="user/*.rs", lifetime=timedelta(days=7)
    )
    assert await resolve(database, token, issued + timedelta(days=6, hours=23)) is not None
    assert await resolve(database, token, issued + timedelta(days=7, minutes=1)) is None


async def test_disabling_an_account_stops_its_tokens_and_new_ones(database: Database) -> None:
    account = await clinician(database)
    token = await provisioning.issue_user_token(database, user_id=account.id, scopes="user/*.rs")
    async with database.write() as conn:
        await Users(conn).update(account.id, disabled=True)
    assert await resolve(database, token) is None
    with pytest.raises(Conflict, match="disabled"):
        await provisioning.issue_user_token(database, user_id=account.id, scopes="user/*.rs")


async def test_a_token_whose_scopes_the_accounts_new_role_may_not_hold_stops_working(
    database: Database,
) -> None:
    account = await clinician(database)
    token = await provisioning.issue_user_token(database, user_id=account.id, scopes="user/*.rs")
    patient = await provisioning.create_patient(
        database, family="Bello", given="A", identifier="M4"
    )
    async with database.write() as conn:
        await Users(conn).update(account.id, role=Role.PATIENT.value, patient_id=patient.id)
    assert await resolve(database, token) is None


async def test_a_service_token_acts_for_its_organisation_with_system_scopes(
    database: Database,
) -> None:
    async with database.write() as conn:
        await Organizations(conn).add("north", "Northside Clinic")
    token = await provisioning.issue_service_token(
        database, name="north lab feed", organization_id="north", scopes="system/Observation.rs"
    )
    principal = await resolve(database, token)
    assert principal is not None
    assert principal.role is Role.SYSTEM and principal.organization_id == "north"
    assert principal.name == "north lab feed" and principal.id == principal.token_id
    assert str(principal.scopes) == "system/Observation.rs"


async def test_a_service_token_is_refused_user_scopes_and_unknown_organisations(
    database: Database,
) -> None:
    with pytest.raises(ScopeNotAllowed, match="system/ scopes only"):
        await provisioning.issue_service_token(database, name="feed", scopes="user/*.rs")
    with pytest.raises(NotFound, match="organisation"):
        await provisioning.issue_service_token(
            database, name="feed", organization_id="nowhere", scopes="system/*.rs"
        )
