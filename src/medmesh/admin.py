"""Administrative actions shared by the CLI, the demo and the tests."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from medmesh.access.identity import passwords
from medmesh.access.identity.accounts import ROLES, check_username
from medmesh.access.identity.credentials import (
    API_TOKEN_PREFIX,
    DEVICE_SECRET_PREFIX,
    hash_secret,
    new_secret,
)
from medmesh.access.identity.principals import DEFAULT_ORGANIZATION, ActorKind, Principal, Role
from medmesh.access.oauth.client_keys import parse_client_jwks
from medmesh.access.policy.decision import standing_relationship
from medmesh.access.policy.grants import ScopeNotAllowed, grantable_scopes
from medmesh.access.policy.scopes import Context
from medmesh.domain.errors import Conflict, InvalidSearch, NotFound
from medmesh.domain.registry import Device, DeviceAssignment, Patient
from medmesh.store.consents import CareTeams
from medmesh.store.database import Database
from medmesh.store.oauth_clients import OAuthClients
from medmesh.store.registry import Assignments, Devices, Patients
from medmesh.store.tokens import ApiTokens
from medmesh.store.users import Organizations, UserRecord, Users

DEFAULT_IDENTIFIER_SYSTEM = "urn:medmesh:mrn"
CARE_TEAM_ROLES = ("primary", "nurse", "escalation", "member")


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
    shared_monitor: bool = False,
) -> DeviceCredential:
    device = Device(
        str(uuid.uuid4()), display_name, manufacturer, model, serial_number, shared_monitor
    )
    secret = new_secret(DEVICE_SECRET_PREFIX)
    async with database.write() as conn:
        await Devices(conn).add(device, hash_secret(secret))
    return DeviceCredential(device.id, secret)


async def set_shared_monitor(database: Database, device_id: str, shared: bool) -> None:
    async with database.write() as conn:
        await Devices(conn).set_shared_monitor(device_id, shared)


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


async def issue_user_token(
    database: Database,
    *,
    user_id: str,
    scopes: str,
    lifetime: timedelta | None = None,
    patient_id: str | None = None,
) -> str:
    """A bearer token for a person's account, shown once (only its hash is kept).

    A patient account's token opens their own record (SMART patient context) and holds
    patient/ scopes only; a clinician's holds user/ scopes, and patient/ scopes given a launch
    patient (`patient_id`) whose care team they are on or whose consent names them (the policy
    still decides every request). No lifetime: valid until revoked or the account is disabled.
    """
    async with database.read() as conn:
        user = await Users(conn).get(user_id)
    if user is None:
        raise NotFound("no user account with this id")
    if user.disabled:
        raise Conflict("this user account is disabled")
    role = Role(user.role)
    granted = grantable_scopes(role, scopes, holder=f"a {role.value} account")
    if role is Role.PATIENT:
        if patient_id not in (None, user.patient_id):
            raise ScopeNotAllowed("a patient account's token opens only their own record")
        patient_id = user.patient_id
    elif any(s.context is Context.PATIENT for s in granted.granted) and patient_id is None:
        raise ScopeNotAllowed("patient/ scopes need a launch patient (the patient's id)")
    elif patient_id is not None and not any(s.context is Context.PATIENT for s in granted.granted):
        raise ScopeNotAllowed("a launch patient goes with patient/ scopes")
    token = new_secret(API_TOKEN_PREFIX)
    now = datetime.now(UTC)
    async with database.write() as conn:
        if patient_id is not None:
            await Patients(conn).get(patient_id)  # NotFound for an unknown patient
            if role is not Role.PATIENT:
                holder = Principal(
                    ActorKind.USER,
                    user.id,
                    user.display_name,
                    role,
                    user.organization_id,
                    granted,
                    patient_id=patient_id,
                )
                if await standing_relationship(conn, holder, patient_id, now=now) is None:
                    raise ScopeNotAllowed(
                        "this account is not on the patient's care team and no consent of "
                        "the patient names it: it cannot be given a token for that record"
                    )
        await ApiTokens(conn).add(
            str(uuid.uuid4()),
            user.display_name,
            role.value,
            hash_secret(token),
            user_id=user.id,
            organization_id=user.organization_id,
            scopes=str(granted),
            patient_id=patient_id,
            expires_at=None if lifetime is None else now + lifetime,
            created_at=now,
        )
    return token


async def issue_service_token(
    database: Database, *, name: str, organization_id: str = DEFAULT_ORGANIZATION, scopes: str
) -> str:
    """A bearer token for an organisation's own integration (system/ scopes), shown once;
    valid until revoked. Partners' systems use SMART Backend Services instead."""
    granted = grantable_scopes(Role.SYSTEM, scopes, holder="a service token")
    if not name.strip():
        raise ValueError("a service token needs a name saying who uses it")
    token = new_secret(API_TOKEN_PREFIX)
    async with database.write() as conn:
        if await Organizations(conn).name(organization_id) is None:
            raise NotFound("no organisation with this id")
        await ApiTokens(conn).add(
            str(uuid.uuid4()),
            name.strip(),
            Role.SYSTEM.value,
            hash_secret(token),
            organization_id=organization_id,
            scopes=str(granted),
        )
    return token


@dataclass(frozen=True, slots=True)
class UserAccount:
    id: str
    username: str
    role: Role
    organization_id: str
    patient_id: str | None


async def create_organization(database: Database, organization_id: str, name: str) -> None:
    async with database.write() as conn:
        await Organizations(conn).add(organization_id, name)


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
    if role not in ROLES:
        raise ValueError(f"a person's account is one of: {', '.join(sorted(ROLES))}")
    if (role is Role.PATIENT) != (patient_id is not None):
        raise ValueError("a patient account needs its patient record, and only it has one")
    if not display_name.strip():
        raise ValueError("an account needs a display name")
    name = check_username(username)
    password_hash = await passwords.hash_password_async(
        password, username=name, rules=passwords.rules_for(role)
    )  # checks the password rules first
    account = UserAccount(str(uuid.uuid4()), name, role, organization_id, patient_id)
    async with database.write() as conn:
        if not await Organizations(conn).exists(organization_id):
            raise NotFound(f"no organisation with the id {organization_id!r}")
        if patient_id is not None:
            await Patients(conn).get(patient_id)  # NotFound if there is no such patient
        await Users(conn).add(
            user_id=account.id,
            organization_id=organization_id,
            username=name,
            display_name=display_name.strip(),
            role=role.value,
            password_hash=password_hash,
            patient_id=patient_id,
        )
    return account


async def register_client(
    database: Database,
    *,
    name: str,
    jwks: str,
    scopes: str,
    organization_id: str = DEFAULT_ORGANIZATION,
) -> str:
    """Register a partner's backend service (SMART Backend Services) and return its client_id.

    `jwks` is its public JWK Set (RS384/ES384 keys, each with a kid); `scopes` the system/
    scopes it may ever be granted (each token request is narrowed to them).
    """
    if not name.strip():
        raise ValueError("a client needs a name saying whose system it is")
    keys = parse_client_jwks(jwks)  # InvalidJwks says what is wrong
    ceiling = grantable_scopes(Role.SYSTEM, scopes, holder="a backend service client")
    client_id = str(uuid.uuid4())
    async with database.write() as conn:
        await OAuthClients(conn).add(
            client_id=client_id,
            organization_id=organization_id,
            name=name.strip(),
            jwks=json.dumps(keys.as_dict(private=False)),
            scopes=str(ceiling),
        )
    return client_id


async def set_client_disabled(database: Database, client_id: str, disabled: bool) -> None:
    """Disable (or re-enable) a client: its tokens stop working on the next request."""
    async with database.write() as conn:
        await OAuthClients(conn).set_disabled(client_id, disabled)


async def add_to_care_team(
    database: Database, patient_id: str, user_id: str, *, role: str = "primary", added_by: str
) -> None:
    async with database.write() as conn:
        await Patients(conn).get(patient_id)
        user = await Users(conn).get(user_id)
        if user is None or user.role != Role.CLINICIAN.value:
            raise NotFound("no clinician with this account")
        if role not in CARE_TEAM_ROLES:
            raise InvalidSearch(f"care-team roles are {', '.join(CARE_TEAM_ROLES)}")
        await CareTeams(conn).add(patient_id, user_id, role, added_by)


async def _user(database: Database, username: str) -> UserRecord:
    async with database.read() as conn:
        record = await Users(conn).find_by_username(username.strip().lower())
    if record is None:
        raise NotFound("no account with this username")
    return record


async def reset_password(database: Database, username: str, password: str) -> None:
    """A new password chosen by the person (rules checked); the account is unlocked too, and
    every web session of the account ends."""
    record = await _user(database, username)
    password_hash = await passwords.hash_password_async(
        password, username=record.username, rules=passwords.rules_for(Role(record.role))
    )
    async with database.write() as conn:
        await Users(conn).end_sessions(
            record.id, password_hash=password_hash, failed_logins=0, locked_until=None
        )


async def reset_totp(database: Database, username: str) -> None:
    """Forget the TOTP secret (a lost phone): staff enrol again at their next sign-in."""
    record = await _user(database, username)
    async with database.write() as conn:
        await Users(conn).update(record.id, totp_secret=None, totp_last_step=None)


async def activate_totp(database: Database, username: str, secret: str) -> None:
    """Set an already known TOTP secret as active, without a confirming code (the demo's
    clinician, whose secret is printed)."""
    record = await _user(database, username)
    async with database.write() as conn:
        await Users(conn).update(record.id, totp_secret=secret, totp_last_step=0)


async def unlock(database: Database, username: str) -> None:
    record = await _user(database, username)
    async with database.write() as conn:
        await Users(conn).update(record.id, failed_logins=0, locked_until=None)


async def set_disabled(database: Database, username: str, *, disabled: bool) -> None:
    """A disabled account cannot sign in, and its open sessions end for good (enabling it
    again does not revive them)."""
    record = await _user(database, username)
    async with database.write() as conn:
        if disabled:
            await Users(conn).end_sessions(record.id, disabled=True)
        else:
            await Users(conn).update(record.id, disabled=False)
