"""Rebuilding a patient's rollups from their stored readings: for readings stored before
rollups existed (`medmesh db backfill-rollups`), and to repair them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.store.database import cipher_of
from medmesh.store.observations import COMPONENT_VALUE, VALUE, component_row
from medmesh.store.rollups import Rollups, summarise_values
from medmesh.store.schema import observation_components, observations, patients


async def patients_with_readings(conn: AsyncConnection) -> list[str]:
    query = select(patients.c.id).where(
        select(observations.c.id).where(observations.c.patient_id == patients.c.id).exists()
    )
    return list((await conn.execute(query.order_by(patients.c.id))).scalars())


async def rebuild(conn: AsyncConnection, patient_id: str) -> int:
    """Replace the patient's rollups with ones computed from every stored reading; returns the
    number of readings folded in. Run in one transaction per patient."""
    # Datetimes, not database arithmetic: a reading on a minute's edge must fall in the bucket
    # ingest put it in (SQLite's julianday() can land a microsecond short of it).
    epoch = observations.c.effective
    singles = (
        await conn.execute(
            select(observations.c.id, observations.c.code, epoch, observations.c.value).where(
                observations.c.patient_id == patient_id, observations.c.value.is_not(None)
            )
        )
    ).all()
    parts = (
        await conn.execute(
            select(
                observations.c.id,
                observations.c.code,
                observation_components.c.code,
                epoch,
                observation_components.c.value,
            )
            .join(
                observation_components, observation_components.c.observation_id == observations.c.id
            )
            .where(observations.c.patient_id == patient_id)
        )
    ).all()
    repository = Rollups(conn)
    await repository.delete_patient(patient_id)
    if not singles and not parts:
        return 0
    key = await cipher_of(conn).key(patient_id)
    single_values = key.open_floats([(oid, sealed) for oid, _, _, sealed in singles], VALUE)
    part_values = key.open_floats(
        [(component_row(oid, part), sealed) for oid, _, part, _, sealed in parts], COMPONENT_VALUE
    )
    values = [
        (patient_id, code, "", at.timestamp(), value)
        for (_, code, at, _), value in zip(singles, single_values, strict=True)
    ] + [
        (patient_id, code, part, at.timestamp(), value)
        for (_, code, part, at, _), value in zip(parts, part_values, strict=True)
    ]
    await repository.add(summarise_values(values))
    return len(singles) + len({oid for oid, *_ in parts})
