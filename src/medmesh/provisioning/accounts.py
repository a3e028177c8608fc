"""People's accounts and their organisations: creation, password and TOTP resets, unlocking,
disabling."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from medmesh.access.identity import passwords
from medmesh.access.identity.accounts import ROLES, check_username
from medmesh.access.identity.principals import DEFAULT_ORGANIZATION, Role
from medmesh.domain.errors import NotFound
from medmesh.store.database import Database
from medmesh.store.registry import Patients
from medmesh.store.users import Organizations, UserRecord, Users


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
        await Users(conn).set_totp(record.id, None, None)


async def activate_totp(database: Database, username: str, secret: str) -> None:
    """Set an already known TOTP secret as active, without a confirming code (the demo's
    clinician, whose secret is printed)."""
    record = await _user(database, username)
    async with database.write() as conn:
        await Users(conn).set_totp(record.id, secret, 0)


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
