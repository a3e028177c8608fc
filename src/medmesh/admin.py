"""Administrative actions shared by the CLI, the demo and the tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from medmesh.access.credentials import (
    API_TOKEN_PREFIX,
    DEVICE_SECRET_PREFIX,
    hash_secret,
    new_secret,
)
from medmesh.access.passwords import hash_password
from medmesh.access.principals import DEFAULT_ORGANIZATION, Role
from medmesh.domain.errors import NotFound
from medmesh.domain.registry import Device, DeviceAssignment, Patient
from medmesh.store.consents import CareTeams
from medmesh.store.database import Database
from medmesh.store.registry import Assignments, Devices, Patients
from medmesh.store.schema import api_tokens
from medmesh.store.tokens import ApiTokens
from medmesh.store.users import Users

DEFAULT_IDENTIFIER_SYSTEM = "urn:medmesh:mrn"


@dataclass(frozen=True, slots=True)
class DeviceCredential:
    device_id: str
    secret: str  # shown once; only its hash is stored


async def create_patient(
    database: Database,
    *,
    family: str,
    given: str,
    identifier: str,
    identifier_system: str = DEFAULT_IDENTIFIER_SYSTEM,
    birth_date: date | None = None,
    gender: str | None = None,
) -> Patient:
    patient = Patient(
        id=str(uuid.uuid4()),
        identifier_system=identifier_system,
        identifier_value=identifier,
        family=family,
        given=given,
        birth_date=birth_date,
        gender=gender,
    )
    async with database.write() as conn:
        await Patients(conn).add(patient)
    return patient


async def register_device(
    database: Database,
    *,
    display_name: str,
    manufacturer: str | None = None,
    model: str | None = None,
    serial_number: str | None = None,
) -> DeviceCredential:
    device = Device(str(uuid.uuid4()), display_name, manufacturer, model, serial_number)
    secret = new_secret(DEVICE_SECRET_PREFIX)
    async with database.write() as conn:
        await Devices(conn).add(device, hash_secret(secret))
    return DeviceCredential(device.id, secret)


async def rotate_device_secret(database: Database, device_id: str) -> DeviceCredential:
    secret = new_secret(DEVICE_SECRET_PREFIX)
    async with database.write() as conn:
        await Devices(conn).set_secret_hash(device_id, hash_secret(secret))
    return DeviceCredential(device_id, secret)


async def assign_device(
    database: Database, device_id: str, patient_id: str, start: datetime | None = None
) -> DeviceAssignment:
    assignment = DeviceAssignment(device_id, patient_id, start or datetime.now(UTC))
    async with database.write() as conn:
        await Assignments(conn).assign(assignment)
    return assignment


async def issue_api_token(database: Database, *, name: str, role: Role) -> str:
    token = new_secret(API_TOKEN_PREFIX)
    async with database.write() as conn:
        await ApiTokens(conn).add(str(uuid.uuid4()), name, role.value, hash_secret(token))
    return token


@dataclass(frozen=True, slots=True)
class UserAccount:
    id: str
    username: str
    role: Role
    organization_id: str
    patient_id: str | None


async def create_user(
    database: Database,
    *,
    username: str,
    display_name: str,
    role: Role,
    password: str,
    organization_id: str = DEFAULT_ORGANIZATION,
    patient_id: str | None = None,
) -> UserAccount:
    """An account for a person; a patient account belongs to one patient record."""
    if (role is Role.PATIENT) != (patient_id is not None):
        raise ValueError("a patient account needs its patient record, and only it has one")
    account = UserAccount(str(uuid.uuid4()), username, role, organization_id, patient_id)
    password_hash = hash_password(password)  # checks the password rules first
    async with database.write() as conn:
        await Users(conn).add(
            user_id=account.id,
            organization_id=organization_id,
            username=username,
            display_name=display_name,
            role=role.value,
            password_hash=password_hash,
            patient_id=patient_id,
        )
    return account


async def issue_user_token(
    database: Database, *, user_id: str, scopes: str, lifetime: timedelta | None = None
) -> str:
    """A bearer token for a user's own API use (interim; the OAuth work replaces it)."""
    token = new_secret(API_TOKEN_PREFIX)
    now = datetime.now(UTC)
    async with database.write() as conn:
        user = await Users(conn).get(user_id)
        if user is None:
            raise ValueError("no such user")
        await conn.execute(
            api_tokens.insert().values(
                id=str(uuid.uuid4()),
                name=user.display_name,
                role=user.role,
                token_hash=hash_secret(token),
                created_at=now,
                user_id=user.id,
                organization_id=user.organization_id,
                scopes=scopes,
                patient_id=user.patient_id,
                expires_at=now + lifetime if lifetime else None,
            )
        )
    return token


async def add_to_care_team(
    database: Database, patient_id: str, user_id: str, *, role: str = "primary", added_by: str
) -> None:
    async with database.write() as conn:
        await Patients(conn).get(patient_id)
        if await Users(conn).get(user_id) is None:
            raise NotFound("no such user")
        await CareTeams(conn).add(patient_id, user_id, role, added_by)
