"""Caregivers a patient names (docs/paging.md#caregivers): a single-use invitation, accepted by
the caregiver who makes their own account (password, then TOTP at first sign-in, like staff);
accepting records a consent naming them (RelatedPerson) for the categories the patient chose,
which is all the access policy lets them see, and the severities they are paged for.
Revoking ends the consent and the link at once."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from medmesh.access.identity import passwords
from medmesh.access.identity.accounts import check_username
from medmesh.access.identity.principals import Role
from medmesh.domain.alerts import Severity
from medmesh.domain.consent import CATEGORIES, Consent, ConsentStatus, GranteeType
from medmesh.domain.errors import Conflict, MedmeshError, NotFound
from medmesh.store.caregivers import CaregiverLink, Caregivers
from medmesh.store.consents import Consents, patient_organization
from medmesh.store.database import Database
from medmesh.store.users import Users

INVITATION_VALID = timedelta(days=7)
# What a caregiver may be paged for: the severities that page anyone (info never pages).
ALERT_TYPES = frozenset({Severity.CRITICAL.value, Severity.URGENT.value, Severity.WARNING.value})
_CODE_BYTES = 15  # 120 random bits, 20 characters


class InvitationInvalid(MedmeshError):
    """An invitation code unknown, used or expired (the same answer for each)."""


@dataclass(frozen=True, slots=True)
class Invited:
    code: str  # shown once to the patient; only its hash is stored
    expires_at: datetime


def code_hash(code: str) -> str:
    return hashlib.sha256(code.strip().encode()).hexdigest()


def checked_choice(categories: set[str], alert_types: set[str]) -> None:
    """Refuse categories or alert types medmesh does not know, saying which."""
    unknown = sorted(categories - CATEGORIES)
    if unknown:
        raise ValueError(f"unknown data categories: {', '.join(unknown)}")
    if not categories:
        raise ValueError("choose at least one kind of data the caregiver may see")
    unknown = sorted(alert_types - ALERT_TYPES)
    if unknown:
        raise ValueError(f"unknown alert types: {', '.join(unknown)}")


async def invite(
    database: Database,
    *,
    patient_id: str,
    by: str,
    categories: set[str],
    alert_types: set[str],
    now: datetime,
) -> Invited:
    checked_choice(categories, alert_types)
    code = secrets.token_urlsafe(_CODE_BYTES)
    expires_at = now + INVITATION_VALID
    async with database.write() as conn:
        await Caregivers(conn).invite(
            invitation_id=str(uuid.uuid4()),
            patient_id=patient_id,
            code_hash=code_hash(code),
            categories=frozenset(categories),
            alert_types=frozenset(alert_types),
            created_by=by,
            at=now,
            expires_at=expires_at,
        )
    return Invited(code, expires_at)


@dataclass(frozen=True, slots=True)
class Accepted:
    """What accepting an invitation made: the caregiver's account and the consent naming it."""

    user_id: str
    organization_id: str
    patient_id: str
    consent_id: str


async def accept(
    database: Database,
    *,
    code: str,
    username: str,
    display_name: str,
    password: str,
    now: datetime,
) -> Accepted:
    """Make the caregiver's account, the consent naming it and the link.
    The password rules are checked (ValueError) before the invitation is used up."""
    if not display_name.strip():
        raise ValueError("give your name, as the patient will see it")
    name = check_username(username)
    password_hash = await passwords.hash_password_async(
        password, username=name, rules=passwords.rules_for(Role.CAREGIVER)
    )
    user_id = str(uuid.uuid4())
    async with database.write() as conn:
        store = Caregivers(conn)
        invitation = await store.invitation(code_hash(code))
        if invitation is None or invitation.used_at is not None or invitation.expires_at <= now:
            raise InvitationInvalid("this invitation is unknown, used or expired")
        organization = await patient_organization(conn, invitation.patient_id)
        if organization is None:
            raise InvitationInvalid("this invitation is unknown, used or expired")
        users = Users(conn)
        if await users.find_by_username(name) is not None:
            raise Conflict("this username is taken")
        if not await store.use_invitation(invitation.id, now):
            raise InvitationInvalid("this invitation is unknown, used or expired")
        await users.add(
            user_id=user_id,
            organization_id=organization,
            username=name,
            display_name=display_name.strip(),
            role=Role.CAREGIVER.value,
            password_hash=password_hash,
        )
        consent = Consent(
            id=str(uuid.uuid4()),
            patient_id=invitation.patient_id,
            status=ConsentStatus.ACTIVE,
            grantee_type=GranteeType.RELATED_PERSON,
            grantee_id=user_id,
            categories=invitation.categories,
            purposes=frozenset(),
            period_start=None,
            period_end=None,
            created_at=now,
            created_by=invitation.created_by,
        )
        await Consents(conn).add(consent)
        await store.link(
            link_id=str(uuid.uuid4()),
            patient_id=invitation.patient_id,
            user_id=user_id,
            consent_id=consent.id,
            alert_types=invitation.alert_types,
            at=now,
        )
    return Accepted(user_id, organization, invitation.patient_id, consent.id)


async def revoke(database: Database, *, patient_id: str, link_id: str, now: datetime) -> None:
    """End a caregiver's consent and link; their next request is refused, no page follows."""
    async with database.write() as conn:
        store = Caregivers(conn)
        link = await store.get(link_id)
        if link is None or link.patient_id != patient_id or link.revoked_at is not None:
            raise NotFound("no such caregiver")
        await store.revoke(link_id, now)
        await Consents(conn).revoke(link.consent_id, now)


async def caregivers_of(database: Database, patient_id: str) -> list[CaregiverLink]:
    async with database.read() as conn:
        return await Caregivers(conn).of_patient(patient_id)
