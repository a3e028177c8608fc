"""Migration 0018 maps each care plan's free-text escalation target (docs/paging.md#migration):
a text naming exactly one staff account (by username, else by display name, ignoring case)
becomes the chain primary → that account; any other text (two accounts, nobody, a patient)
stays unmapped, with no chain. Run on a fresh SQLite file migrated to 0017, as an old
installation would be."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from medmesh.store import migrate
from medmesh.store.database import Database

_FILLER = {"INTEGER": 0, "BOOLEAN": 0, "BLOB": b"x", "DATETIME": "2026-01-01 00:00:00"}


async def _insert(database: Database, table: str, **values: Any) -> None:
    """A row with `values`, and a placeholder in every other NOT NULL column without a
    default (the old schema's columns, whatever they were at 0017)."""
    async with database.write() as conn:
        columns = (await conn.exec_driver_sql(f"PRAGMA table_info({table})")).all()
        row = dict(values)
        for _, name, kind, notnull, default, _pk in columns:
            if name not in row and notnull and default is None:
                kind_name = str(kind).upper().split("(")[0]
                row[name] = _FILLER.get(kind_name, f"{name}-{uuid.uuid4().hex}")
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        await conn.exec_driver_sql(
            f"INSERT INTO {table} ({names}) VALUES ({marks})", tuple(row.values())
        )


async def test_free_text_targets_naming_one_staff_account_become_chains(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        await migrate.upgrade(database, "0017")
        staff = {
            "u-ada": ("dr.ada", "Ada Lovelace", "clinician"),
            "u-smith1": ("dr.smith", "Dr Smith", "clinician"),
            "u-smith2": ("dr.smith2", "Dr Smith", "clinician"),
            "u-pat": ("pat.ient", "Pat Ient", "patient"),
        }
        for user_id, (username, name, role) in staff.items():
            await _insert(
                database,
                "users",
                id=user_id,
                username=username,
                display_name=name,
                role=role,
                organization_id="default",
                patient_id=None,
            )
        targets = {
            "p-username": "  DR.ADA ",  # a username, any case, spaces around
            "p-name": "ada lovelace",  # a display name
            "p-two": "Dr Smith",  # two accounts have this name
            "p-nobody": "the night nurse",
            "p-patient": "Pat Ient",  # not staff
        }
        for patient_id, target in targets.items():
            await _insert(
                database,
                "patients",
                id=patient_id,
                organization_id="default",
                merged_into=None,
            )
            await _insert(
                database, "care_plans", patient_id=patient_id, escalation_clinician=target
            )

        await migrate.upgrade(database, "0018")

        async with database.read() as conn:
            rows = await conn.exec_driver_sql(
                "SELECT patient_id, escalation_clinician, escalation_chain FROM care_plans"
            )
            plans = {r[0]: (r[1], r[2]) for r in rows.all()}
        mapped = [{"to": "primary"}, {"to": "user", "user": "u-ada"}]
        assert json.loads(plans["p-username"][1]) == mapped
        assert json.loads(plans["p-name"][1]) == mapped
        for unmapped in ("p-two", "p-nobody", "p-patient"):
            text, chain = plans[unmapped]
            assert chain is None, unmapped
            assert text == targets[unmapped]  # left where it was, for review
    finally:
        await database.dispose()
