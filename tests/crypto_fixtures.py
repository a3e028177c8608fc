"""Builders for the encryption and erasure tests: readings stored through the repository (so
they are sealed like ingest seals them), raw column reads, and copies of a database."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from medmesh.crypto.local import local_cipher
from medmesh.domain.reading import MeasuredValue, Reading
from medmesh.domain.vocabulary import measure_by_key
from medmesh.store.database import Database
from medmesh.store.observations import Observations
from medmesh.store.schema import (
    observation_components,
    observation_rollups,
    observations,
    patients,
)

START = datetime(2026, 11, 1, tzinfo=UTC)


def heart_rate(patient_id: str, device_id: str, n: int, value: float) -> Reading:
    measure = measure_by_key("heart-rate")
    assert measure is not None
    return Reading(
        device_id=device_id,
        message_id=f"hr-{patient_id[:8]}-{n}",
        patient_id=patient_id,
        measure=measure,
        effective=START + timedelta(minutes=n),
        values=(MeasuredValue("8867-4", value, "/min"),),
    )


def blood_pressure(patient_id: str, device_id: str, n: int, sys: float, dia: float) -> Reading:
    measure = measure_by_key("blood-pressure")
    assert measure is not None
    return Reading(
        device_id=device_id,
        message_id=f"bp-{patient_id[:8]}-{n}",
        patient_id=patient_id,
        measure=measure,
        effective=START + timedelta(minutes=n),
        values=(MeasuredValue("8480-6", sys, "mm[Hg]"), MeasuredValue("8462-4", dia, "mm[Hg]")),
    )


async def store(database: Database, readings: Sequence[Reading]) -> None:
    async with database.write() as conn:
        await Observations(conn).add_batch(readings, START)


async def raw_rows(database: Database, patient_id: str) -> dict[str, list[dict[str, Any]]]:
    """The patient's rows as stored, columns untouched by any decryption."""
    async with database.read() as conn:
        found_patients = (
            (await conn.execute(select(patients).where(patients.c.id == patient_id)))
            .mappings()
            .all()
        )
        found_observations = (
            (
                await conn.execute(
                    select(observations).where(observations.c.patient_id == patient_id)
                )
            )
            .mappings()
            .all()
        )
        ids = [r["id"] for r in found_observations]
        found_components = (
            (
                await conn.execute(
                    select(observation_components).where(
                        observation_components.c.observation_id.in_(ids)
                    )
                )
            )
            .mappings()
            .all()
        )
        found_rollups = (
            (
                await conn.execute(
                    select(observation_rollups).where(
                        observation_rollups.c.patient_id == patient_id
                    )
                )
            )
            .mappings()
            .all()
        )
    return {
        "patients": [dict(r) for r in found_patients],
        "observations": [dict(r) for r in found_observations],
        "observation_components": [dict(r) for r in found_components],
        "observation_rollups": [dict(r) for r in found_rollups],
    }


def keyed_database(database_url: str, keys_dir: Path) -> Database:
    """The database with a keyring and key store of its own (not shared with other tests)."""
    cipher = local_cipher(database_url, keys_dir / "master-keys.json", keys_dir / "patient-keys.db")
    return Database(database_url, cipher=cipher)
