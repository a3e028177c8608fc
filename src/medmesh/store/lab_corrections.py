"""Corrected laboratory results (HL7 OBX-11 `C`) replace the result they correct: the same
test (code) from the same laboratory interface (device) for the same patient and specimen time
(OBX-14, else OBR-7). The earlier result is deleted with its findings, so the record and every
search show the corrected value only; the patient's chart rollups are rebuilt."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import and_, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.store import rollup_backfill
from medmesh.store.lab_results import LabFindings
from medmesh.store.schema import lab_result_details, observations


async def replace_corrected(conn: AsyncConnection, findings: Mapping[str, LabFindings]) -> int:
    """Delete the results the stored corrected ones (by observation id) correct; returns how
    many were replaced. A result is never replaced by itself (a resent correction)."""
    corrected = [oid for oid, found in findings.items() if found.status == "corrected"]
    if not corrected:
        return 0
    new = observations.alias("corrected")
    old = observations
    rows = (
        await conn.execute(
            select(old.c.id, old.c.patient_id)
            .join(lab_result_details, lab_result_details.c.observation_id == old.c.id)
            .join(
                new,
                and_(
                    new.c.patient_id == old.c.patient_id,
                    new.c.device_id == old.c.device_id,
                    new.c.code == old.c.code,
                    new.c.effective == old.c.effective,
                    new.c.id != old.c.id,
                ),
            )
            .where(new.c.id.in_(corrected), old.c.id.not_in(corrected))
        )
    ).all()
    if not rows:
        return 0
    replaced = sorted({oid for oid, _ in rows})
    await conn.execute(
        delete(lab_result_details).where(lab_result_details.c.observation_id.in_(replaced))
    )
    await conn.execute(delete(observations).where(observations.c.id.in_(replaced)))
    for patient_id in sorted({pid for _, pid in rows}):
        await rollup_backfill.rebuild(conn, patient_id)
    return len(replaced)
