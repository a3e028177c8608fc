"""Which caregivers an alert pages: those the patient linked for the alert's severity whose
consent, decided by the access policy like any look at the record, lets them see alerts.
Caregiver pages are outside the escalation chain (level `CAREGIVER_LEVEL`): they never
escalate, and an unanswered one pages nobody else."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.access.identity.principals import ActorKind, Principal, Role
from medmesh.access.policy.decision import ALERTS_CATEGORY, decide
from medmesh.access.policy.scopes import Interaction, Scopes
from medmesh.domain.alerts import Alert
from medmesh.store.caregivers import CaregiverLink, Caregivers

CAREGIVER_LEVEL = -1
_SCOPES = Scopes.parse("user/*.rs")


def _principal(link: CaregiverLink) -> Principal:
    return Principal(
        kind=ActorKind.USER,
        id=link.user_id,
        name=link.display_name,
        role=Role.CAREGIVER,
        organization_id="",  # a caregiver is let in by a consent naming them, never by this
        scopes=_SCOPES,
    )


async def may_see_alerts(
    conn: AsyncConnection, link: CaregiverLink, patient_id: str, now: datetime
) -> bool:
    decision = await decide(conn, _principal(link), patient_id, "Flag", Interaction.READ, now=now)
    return decision.permitted and decision.allows_category(ALERTS_CATEGORY)


async def caregivers_paged(conn: AsyncConnection, alert: Alert, now: datetime) -> list[str]:
    """The caregivers' account ids this alert pages now."""
    paged = []
    for link in await Caregivers(conn).of_patient(alert.patient_id):
        if alert.severity.value in link.alert_types and await may_see_alerts(
            conn, link, alert.patient_id, now
        ):
            paged.append(link.user_id)
    return paged


async def still_caregiver(
    conn: AsyncConnection, user_id: str, patient_id: str, now: datetime
) -> bool:
    """Whether the caregiver is still linked to the patient and may see their alerts (a page
    held while the patient revoked them is not sent)."""
    for link in await Caregivers(conn).of_patient(patient_id):
        if link.user_id == user_id:
            return await may_see_alerts(conn, link, patient_id, now)
    return False
