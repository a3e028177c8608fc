"""Panels of patients: an organisation's patients and a clinician's care-team patients
(what a FHIR Group of `$export` stands for)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.store.schema import care_team_members, organizations, patients, users


async def organization_panel(conn: AsyncConnection, organization_id: str) -> list[str] | None:
    """The ids of the organisation's patients, sorted; None when there is no such organisation."""
    exists = await conn.execute(
        select(organizations.c.id).where(organizations.c.id == organization_id)
    )
    if exists.first() is None:
        return None
    query = (
        select(patients.c.id)
        .where(patients.c.organization_id == organization_id)
        .order_by(patients.c.id)
    )
    return list((await conn.execute(query)).scalars())


async def care_team_panel(conn: AsyncConnection, user_id: str) -> list[str] | None:
    """The ids of the patients whose care team the user is in, sorted; None when no such user."""
    exists = await conn.execute(select(users.c.id).where(users.c.id == user_id))
    if exists.first() is None:
        return None
    query = (
        select(care_team_members.c.patient_id)
        .where(care_team_members.c.user_id == user_id)
        .order_by(care_team_members.c.patient_id)
    )
    return list((await conn.execute(query)).scalars())
