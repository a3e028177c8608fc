"""API bearer tokens issued at the command line, for accounts and for organisations' services."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from medmesh.access.identity.credentials import (
    API_TOKEN_PREFIX,
    hash_secret,
    new_secret,
)
from medmesh.access.identity.principals import DEFAULT_ORGANIZATION, ActorKind, Principal, Role
from medmesh.access.policy.decision import standing_relationship
from medmesh.access.policy.grants import ScopeNotAllowed, grantable_scopes
from medmesh.access.policy.scopes import Context
from medmesh.domain.errors import Conflict, NotFound
from medmesh.store.database import Database
from medmesh.store.registry import Patients
from medmesh.store.tokens import ApiTokens
from medmesh.store.users import Organizations, Users


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
