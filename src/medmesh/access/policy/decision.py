"""The one access decision: may this principal do this to this patient's record, and why.

Order of the rules (docs/access.md):
1. The credential's SMART scopes must allow the resource type and interaction at all.
2. A patient sees only their own record.
3. A clinician sees the patients whose care team they are in; beyond it, the patients whose
   consent names them or their organisation; in an emergency, a patient they opened with
   break-glass (a reason is required; audited and shown to the patient).
4. A backend service (system) sees its own organisation's patients, and the patients whose
   consent names its organisation.
5. An organisation admin manages accounts, consents and erasure, and reads no health data.
6. A caregiver (named by the patient) reads the categories the patient's consent naming them
   (RelatedPerson) grants, and writes nothing.

A token's patient/ scopes and launch patient only narrow: for anyone but the patient
themself, the launch patient is seen only on the grounds of rules 3 and 4, like any other.
Every decision reads the stored facts afresh, so a revoked consent or a care-team change
takes effect on the next request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.access.identity.principals import Principal, Role
from medmesh.access.policy.scopes import Context, Interaction
from medmesh.domain.consent import Consent, GranteeType
from medmesh.domain.vocabulary import category_of, codes_in_categories
from medmesh.store.consents import (
    BreakGlass,
    CareTeams,
    Consents,
    patient_organization,
    patients_of_organization,
)

EMERGENCY_PURPOSE = "ETREAT"
ALERTS_CATEGORY = "alerts"  # the consent category of alerts (Flags)
READS = frozenset({Interaction.READ, Interaction.SEARCH})


class Refusal(StrEnum):
    INSUFFICIENT_SCOPE = "insufficient-scope"
    NOT_OWN_RECORD = "not-own-record"
    NOT_LAUNCH_PATIENT = "not-launch-patient"  # patient/ scopes name another patient
    NO_CARE_RELATIONSHIP = "no-care-relationship"
    ROLE_WITHOUT_ACCESS = "role-without-access"
    UNKNOWN_PATIENT = "unknown-patient"
    CAREGIVER_READS_ONLY = "caregiver-reads-only"


@dataclass(frozen=True, slots=True)
class Decision:
    permitted: bool
    # Why: self, care-team, organization, consent:<id>, break-glass:<id>; or a Refusal code.
    basis: str
    purpose: str
    # The data categories a consent limits the access to; None: every category.
    categories: frozenset[str] | None = None

    def allows_category(self, category: str) -> bool:
        return self.categories is None or category in self.categories


def _permit(basis: str, purpose: str, categories: frozenset[str] | None = None) -> Decision:
    return Decision(True, basis, purpose, categories)


def _refuse(refusal: Refusal, purpose: str) -> Decision:
    return Decision(False, refusal.value, purpose)


def category_of_code(code: str) -> str | None:
    """The data category of a reading's LOINC code (observation-category)."""
    return category_of(code).value


def _consented(
    found: list[Consent], principal: Principal, patient_id: str, now: datetime
) -> Decision | None:
    caregiver = principal.role is Role.CAREGIVER
    granting = [
        c
        for c in found
        if c.patient_id == patient_id
        # A caregiver is let in only by a consent naming them, and only they by such a one.
        and (c.grantee_type is GranteeType.RELATED_PERSON) == caregiver
        and c.grants(
            user_id=principal.id if principal.role in (Role.CLINICIAN, Role.CAREGIVER) else None,
            organization_id=principal.organization_id,
            purpose=principal.purpose,
            at=now,
        )
    ]
    if not granting:
        return None
    categories: frozenset[str] | None = frozenset()
    for consent in granting:
        if not consent.categories:
            categories = None
            break
        assert categories is not None
        categories = categories | consent.categories
    return _permit(f"consent:{granting[0].id}", principal.purpose, categories)


async def decide(
    conn: AsyncConnection,
    principal: Principal,
    patient_id: str,
    resource_type: str,
    interaction: Interaction,
    *,
    now: datetime,
) -> Decision:
    purpose = principal.purpose
    contexts = principal.scopes.contexts(resource_type, interaction)
    if not contexts:
        return _refuse(Refusal.INSUFFICIENT_SCOPE, purpose)
    own = principal.patient_id is not None and principal.patient_id == patient_id
    if principal.role is Role.PATIENT:
        if own and contexts & {Context.PATIENT, Context.USER}:
            return _permit("self", purpose)
        return _refuse(Refusal.NOT_OWN_RECORD, purpose)
    # Anyone else's patient/ scopes reach the launch patient only, and only narrow: the
    # care team, a consent or break-glass must still allow it, decided afresh each time.
    if Context.PATIENT in contexts:
        if own:
            contexts = contexts | {Context.USER, Context.SYSTEM}
        elif contexts == {Context.PATIENT}:
            return _refuse(Refusal.NOT_LAUNCH_PATIENT, purpose)
    if principal.role is Role.CLINICIAN and Context.USER in contexts:
        if await CareTeams(conn).is_member(patient_id, principal.id):
            return _permit("care-team", purpose)
        consents = await Consents(conn).for_patient(patient_id, active_only=True)
        consented = _consented(consents, principal, patient_id, now)
        if consented is not None:
            return consented
        emergency = await BreakGlass(conn).active(principal.id, patient_id, now)
        if emergency is not None:
            return _permit(f"break-glass:{emergency}", EMERGENCY_PURPOSE)
        return _refuse(Refusal.NO_CARE_RELATIONSHIP, purpose)
    if principal.role is Role.CAREGIVER and Context.USER in contexts:
        if interaction not in READS:
            return _refuse(Refusal.CAREGIVER_READS_ONLY, purpose)
        consents = await Consents(conn).for_patient(patient_id, active_only=True)
        consented = _consented(consents, principal, patient_id, now)
        if consented is not None:
            return consented
        return _refuse(Refusal.NO_CARE_RELATIONSHIP, purpose)
    if principal.role is Role.SYSTEM and Context.SYSTEM in contexts:
        organization = await patient_organization(conn, patient_id)
        if organization is not None and organization == principal.organization_id:
            return _permit("organization", purpose)
        consents = await Consents(conn).for_patient(patient_id, active_only=True)
        consented = _consented(consents, principal, patient_id, now)
        if consented is not None:
            return consented
        return _refuse(Refusal.NO_CARE_RELATIONSHIP, purpose)
    return _refuse(Refusal.ROLE_WITHOUT_ACCESS, purpose)


async def standing_relationship(
    conn: AsyncConnection, principal: Principal, patient_id: str, *, now: datetime
) -> str | None:
    """The lasting ground on which a clinician or service sees this patient's record (their
    care team or organisation, or a consent naming them), or None. Break-glass is not one:
    it is for an emergency and ends by itself. A launch patient is issued only on such a
    ground; each request is still decided afresh by `decide`."""
    if principal.role is Role.CLINICIAN:
        if await CareTeams(conn).is_member(patient_id, principal.id):
            return "care-team"
    elif principal.role is Role.SYSTEM:
        if await patient_organization(conn, patient_id) == principal.organization_id:
            return "organization"
    else:
        return None
    consents = await Consents(conn).for_patient(patient_id, active_only=True)
    consented = _consented(consents, principal, patient_id, now)
    return None if consented is None else consented.basis


async def visible_patients(
    conn: AsyncConnection,
    principal: Principal,
    resource_type: str,
    interaction: Interaction,
    *,
    now: datetime,
) -> dict[str, Decision]:
    """Every patient whose record the principal may search now, with the decision for each
    (a search without a patient parameter covers exactly these)."""
    contexts = principal.scopes.contexts(resource_type, interaction)
    purpose = principal.purpose
    decisions: dict[str, Decision] = {}
    if principal.role is Role.PATIENT:
        if principal.patient_id is not None and contexts & {Context.PATIENT, Context.USER}:
            decisions[principal.patient_id] = _permit("self", purpose)
        return decisions
    if principal.patient_id is not None and Context.PATIENT in contexts:
        # A launch patient on anyone else's token: seen only where the policy allows it.
        launch = await decide(
            conn, principal, principal.patient_id, resource_type, interaction, now=now
        )
        if launch.permitted:
            decisions[principal.patient_id] = launch
    if principal.role is Role.CAREGIVER:
        if Context.USER not in contexts or interaction not in READS:
            return decisions
        granted = await Consents(conn).granted_to(
            user_id=principal.id, organization_id=principal.organization_id, caregiver=True
        )
        for patient_id in sorted({c.patient_id for c in granted}):
            consented = _consented(granted, principal, patient_id, now)
            if consented is not None:
                decisions[patient_id] = consented
        return decisions
    if principal.role is Role.CLINICIAN and Context.USER in contexts:
        user_id: str | None = principal.id
        for patient_id, grant in (await BreakGlass(conn).active_grants(principal.id, now)).items():
            decisions[patient_id] = _permit(f"break-glass:{grant}", EMERGENCY_PURPOSE)
    elif principal.role is Role.SYSTEM and Context.SYSTEM in contexts:
        user_id = None
    else:
        return decisions
    # Consents first, then stronger grounds overwrite them (they carry no category limit).
    granted = await Consents(conn).granted_to(
        user_id=user_id, organization_id=principal.organization_id
    )
    for patient_id in sorted({c.patient_id for c in granted}):
        consented = _consented(granted, principal, patient_id, now)
        if consented is not None:
            decisions[patient_id] = consented
    if principal.role is Role.CLINICIAN:
        for patient_id in await CareTeams(conn).patients_of(principal.id):
            decisions[patient_id] = _permit("care-team", purpose)
    else:
        for patient_id in await patients_of_organization(conn, principal.organization_id):
            decisions[patient_id] = _permit("organization", purpose)
    return decisions


ObservationAccess = tuple[tuple[tuple[str, ...], tuple[str, ...] | None], ...]


def observation_access(decisions: dict[str, Decision]) -> ObservationAccess:
    """The (patients, codes) groups a search may return, from per-patient decisions: patients
    seen in full in one group, those a consent limits to some categories grouped by them."""
    full = tuple(sorted(p for p, d in decisions.items() if d.categories is None))
    limited: dict[frozenset[str], list[str]] = {}
    for patient_id, decision in decisions.items():
        if decision.categories is not None:
            limited.setdefault(decision.categories, []).append(patient_id)
    groups: list[tuple[tuple[str, ...], tuple[str, ...] | None]] = [(full, None)] if full else []
    for categories, patient_ids in limited.items():
        codes = codes_in_categories(categories)
        if codes:
            groups.append((tuple(sorted(patient_ids)), codes))
    return tuple(groups)


async def consent_manager_basis(
    conn: AsyncConnection, principal: Principal, patient_id: str, interaction: Interaction
) -> str | None:
    """Why the principal may manage (read, record, revoke) the patient's consents: `self` for
    the patient, `organization-admin` for an admin of the patient's organisation; None: may
    not. Care-team clinicians and grantees do not manage them."""
    if not principal.scopes.allows("Consent", interaction):
        return None
    if principal.role is Role.PATIENT and principal.patient_id == patient_id:
        return "self"
    if principal.role is Role.ORG_ADMIN:
        organization = await patient_organization(conn, patient_id)
        if organization is not None and organization == principal.organization_id:
            return "organization-admin"
    return None


async def audit_reader_basis(
    conn: AsyncConnection, principal: Principal, patient_id: str, interaction: Interaction
) -> str | None:
    """Why the principal may read the accesses to the patient's record (AuditEvent): the
    patient ("who looked at my record"), and for accountability their organisation's admins
    and backend services (a compliance system). Clinicians do not read other people's trail."""
    if not principal.scopes.allows("AuditEvent", interaction):
        return None
    if principal.role is Role.PATIENT:
        return "self" if principal.patient_id == patient_id else None
    if principal.role in (Role.ORG_ADMIN, Role.SYSTEM):
        organization = await patient_organization(conn, patient_id)
        if organization is not None and organization == principal.organization_id:
            return "organization-admin" if principal.role is Role.ORG_ADMIN else "organization"
    return None
