"""Repository of caregivers: a patient's single-use invitations and the caregivers who
accepted one (their account, the consent naming them, the severities they are paged for)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.store.schema import caregiver_invitations, caregivers, users


@dataclass(frozen=True, slots=True)
class Invitation:
    id: str
    patient_id: str
    categories: frozenset[str]  # empty: every category
    alert_types: frozenset[str]  # severities the caregiver will be paged for
    created_by: str
    expires_at: datetime
    used_at: datetime | None


@dataclass(frozen=True, slots=True)
class CaregiverLink:
    id: str
    patient_id: str
    user_id: str
    display_name: str
    consent_id: str
    alert_types: frozenset[str]
    created_at: datetime
    revoked_at: datetime | None


def _invitation(row: RowMapping) -> Invitation:
    return Invitation(
        id=row["id"],
        patient_id=row["patient_id"],
        categories=frozenset(json.loads(row["categories"])),
        alert_types=frozenset(json.loads(row["alert_types"])),
        created_by=row["created_by"],
        expires_at=row["expires_at"],
        used_at=row["used_at"],
    )


def _link(row: RowMapping) -> CaregiverLink:
    return CaregiverLink(
        id=row["id"],
        patient_id=row["patient_id"],
        user_id=row["user_id"],
        display_name=row["display_name"],
        consent_id=row["consent_id"],
        alert_types=frozenset(json.loads(row["alert_types"])),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


_LINKS = select(caregivers, users.c.display_name).join(users, users.c.id == caregivers.c.user_id)


class Caregivers:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def invite(
        self,
        *,
        invitation_id: str,
        patient_id: str,
        code_hash: str,
        categories: frozenset[str],
        alert_types: frozenset[str],
        created_by: str,
        at: datetime,
        expires_at: datetime,
    ) -> None:
        await self._conn.execute(
            caregiver_invitations.insert().values(
                id=invitation_id,
                patient_id=patient_id,
                code_hash=code_hash,
                categories=json.dumps(sorted(categories)),
                alert_types=json.dumps(sorted(alert_types)),
                created_by=created_by,
                created_at=at,
                expires_at=expires_at,
            )
        )

    async def invitation(self, code_hash: str) -> Invitation | None:
        rows = await self._conn.execute(
            select(caregiver_invitations).where(caregiver_invitations.c.code_hash == code_hash)
        )
        found = rows.mappings().first()
        return None if found is None else _invitation(found)

    async def use_invitation(self, invitation_id: str, at: datetime) -> bool:
        """Mark the invitation used, unless it was already (a second use racing the first)."""
        result = await self._conn.execute(
            update(caregiver_invitations)
            .where(
                caregiver_invitations.c.id == invitation_id,
                caregiver_invitations.c.used_at.is_(None),
            )
            .values(used_at=at)
        )
        return bool(result.rowcount)

    async def pending(self, patient_id: str, now: datetime) -> list[Invitation]:
        rows = await self._conn.execute(
            select(caregiver_invitations)
            .where(
                caregiver_invitations.c.patient_id == patient_id,
                caregiver_invitations.c.used_at.is_(None),
                caregiver_invitations.c.expires_at > now,
            )
            .order_by(caregiver_invitations.c.created_at)
        )
        return [_invitation(r) for r in rows.mappings()]

    async def link(
        self,
        *,
        link_id: str,
        patient_id: str,
        user_id: str,
        consent_id: str,
        alert_types: frozenset[str],
        at: datetime,
    ) -> None:
        await self._conn.execute(
            caregivers.insert().values(
                id=link_id,
                patient_id=patient_id,
                user_id=user_id,
                consent_id=consent_id,
                alert_types=json.dumps(sorted(alert_types)),
                created_at=at,
            )
        )

    async def get(self, link_id: str) -> CaregiverLink | None:
        rows = await self._conn.execute(_LINKS.where(caregivers.c.id == link_id))
        found = rows.mappings().first()
        return None if found is None else _link(found)

    async def of_patient(self, patient_id: str, *, active_only: bool = True) -> list[CaregiverLink]:
        query = _LINKS.where(caregivers.c.patient_id == patient_id)
        if active_only:
            query = query.where(caregivers.c.revoked_at.is_(None))
        rows = await self._conn.execute(query.order_by(caregivers.c.created_at))
        return [_link(r) for r in rows.mappings()]

    async def of_caregiver(self, user_id: str) -> list[CaregiverLink]:
        rows = await self._conn.execute(
            _LINKS.where(caregivers.c.user_id == user_id, caregivers.c.revoked_at.is_(None))
        )
        return [_link(r) for r in rows.mappings()]

    async def revoke(self, link_id: str, at: datetime) -> bool:
        result = await self._conn.execute(
            update(caregivers)
            .where(caregivers.c.id == link_id, caregivers.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        return bool(result.rowcount)
