"""Repositories for the facts access decisions read: consents, care teams, break-glass."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.consent import Consent, ConsentStatus, GranteeType
from medmesh.store.schema import break_glass, care_team_members, consents, patients


def _consent(row: RowMapping) -> Consent:
    return Consent(
        id=row["id"],
        patient_id=row["patient_id"],
        status=ConsentStatus(row["status"]),
        grantee_type=GranteeType(row["grantee_type"]),
        grantee_id=row["grantee_id"],
        categories=frozenset(json.loads(row["categories"])),
        purposes=frozenset(json.loads(row["purposes"])),
        period_start=row["period_start"],
        period_end=row["period_end"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        revoked_at=row["revoked_at"],
    )


class Consents:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, consent: Consent) -> None:
        await self._conn.execute(
            consents.insert().values(
                id=consent.id,
                patient_id=consent.patient_id,
                status=consent.status.value,
                grantee_type=consent.grantee_type.value,
                grantee_id=consent.grantee_id,
                categories=json.dumps(sorted(consent.categories)),
                purposes=json.dumps(sorted(consent.purposes)),
                period_start=consent.period_start,
                period_end=consent.period_end,
                created_at=consent.created_at,
                created_by=consent.created_by,
            )
        )

    async def get(self, consent_id: str) -> Consent | None:
        rows = await self._conn.execute(select(consents).where(consents.c.id == consent_id))
        row = rows.mappings().first()
        return None if row is None else _consent(row)

    async def for_patient(self, patient_id: str, *, active_only: bool = False) -> list[Consent]:
        query = select(consents).where(consents.c.patient_id == patient_id)
        if active_only:
            query = query.where(consents.c.status == ConsentStatus.ACTIVE.value)
        rows = await self._conn.execute(query.order_by(consents.c.created_at, consents.c.id))
        return [_consent(r) for r in rows.mappings()]

    async def granted_to(
        self, *, user_id: str | None, organization_id: str, caregiver: bool = False
    ) -> list[Consent]:
        """Active consents naming this user or their organisation (periods not yet checked);
        for a caregiver, only those naming them as a related person."""
        if caregiver:
            return [
                _consent(r)
                for r in (
                    await self._conn.execute(
                        select(consents).where(
                            consents.c.status == ConsentStatus.ACTIVE.value,
                            consents.c.grantee_type == GranteeType.RELATED_PERSON.value,
                            consents.c.grantee_id == user_id,
                        )
                    )
                ).mappings()
            ]
        grantee = and_(
            consents.c.grantee_type == GranteeType.ORGANIZATION.value,
            consents.c.grantee_id == organization_id,
        )
        if user_id is not None:
            grantee = or_(
                grantee,
                and_(
                    consents.c.grantee_type == GranteeType.PRACTITIONER.value,
                    consents.c.grantee_id == user_id,
                ),
            )
        rows = await self._conn.execute(
            select(consents).where(consents.c.status == ConsentStatus.ACTIVE.value, grantee)
        )
        return [_consent(r) for r in rows.mappings()]

    async def revoke(self, consent_id: str, at: datetime) -> bool:
        result = await self._conn.execute(
            update(consents)
            .where(consents.c.id == consent_id, consents.c.status == ConsentStatus.ACTIVE.value)
            .values(status=ConsentStatus.INACTIVE.value, revoked_at=at)
        )
        return bool(result.rowcount)


class CareTeams:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, patient_id: str, user_id: str, role: str, added_by: str) -> None:
        if await self.is_member(patient_id, user_id):
            return
        await self._conn.execute(
            care_team_members.insert().values(
                patient_id=patient_id,
                user_id=user_id,
                role=role,
                added_at=datetime.now(UTC),
                added_by=added_by,
            )
        )

    async def remove(self, patient_id: str, user_id: str) -> bool:
        result = await self._conn.execute(
            care_team_members.delete().where(
                care_team_members.c.patient_id == patient_id,
                care_team_members.c.user_id == user_id,
            )
        )
        return bool(result.rowcount)

    async def is_member(self, patient_id: str, user_id: str) -> bool:
        rows = await self._conn.execute(
            select(care_team_members.c.role).where(
                care_team_members.c.patient_id == patient_id,
                care_team_members.c.user_id == user_id,
            )
        )
        return rows.first() is not None

    async def patients_of(self, user_id: str) -> list[str]:
        rows = await self._conn.execute(
            select(care_team_members.c.patient_id).where(care_team_members.c.user_id == user_id)
        )
        return [r[0] for r in rows]

    async def members(self, patient_id: str) -> list[tuple[str, str]]:
        """(user id, role) of each member of the patient's care team."""
        rows = await self._conn.execute(
            select(care_team_members.c.user_id, care_team_members.c.role).where(
                care_team_members.c.patient_id == patient_id
            )
        )
        return [(r[0], r[1]) for r in rows]


class BreakGlass:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def start(
        self,
        *,
        grant_id: str,
        user_id: str,
        patient_id: str,
        reason: str,
        at: datetime,
        until: datetime,
    ) -> None:
        await self._conn.execute(
            break_glass.insert().values(
                id=grant_id,
                user_id=user_id,
                patient_id=patient_id,
                reason=reason,
                started_at=at,
                expires_at=until,
            )
        )

    async def active(self, user_id: str, patient_id: str, at: datetime) -> str | None:
        """The id of the user's running emergency access to the patient's record, if any."""
        rows = await self._conn.execute(
            select(break_glass.c.id)
            .where(
                break_glass.c.user_id == user_id,
                break_glass.c.patient_id == patient_id,
                break_glass.c.started_at <= at,
                break_glass.c.expires_at > at,
            )
            .order_by(break_glass.c.expires_at.desc())
        )
        return rows.scalars().first()

    async def active_grants(self, user_id: str, at: datetime) -> dict[str, str]:
        """Patient id → id of the user's running emergency access to them (the one lasting
        longest, as `active` picks)."""
        rows = await self._conn.execute(
            select(break_glass.c.patient_id, break_glass.c.id)
            .where(
                break_glass.c.user_id == user_id,
                break_glass.c.started_at <= at,
                break_glass.c.expires_at > at,
            )
            .order_by(break_glass.c.expires_at)
        )
        return {patient_id: grant_id for patient_id, grant_id in rows}

    async def for_patient(self, patient_id: str) -> Sequence[RowMapping]:
        rows = await self._conn.execute(
            select(break_glass)
            .where(break_glass.c.patient_id == patient_id)
            .order_by(break_glass.c.started_at.desc())
        )
        return list(rows.mappings())


async def patient_organization(conn: AsyncConnection, patient_id: str) -> str | None:
    rows = await conn.execute(select(patients.c.organization_id).where(patients.c.id == patient_id))
    return rows.scalar_one_or_none()


async def patients_of_organization(conn: AsyncConnection, organization_id: str) -> list[str]:
    rows = await conn.execute(
        select(patients.c.id).where(patients.c.organization_id == organization_id)
    )
    return [r[0] for r in rows]
