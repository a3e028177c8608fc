"""The patients and devices readings belong to, checked and held once a batch on PostgreSQL.

PostgreSQL's `observations` declares no foreign keys (migration 0028): a foreign key looks up
and key-share-locks the patient's and the device's rows once for every reading, which cost
more CPU than storing the reading. `hold_owners` takes the same locks once for each patient and
device of a batch, in the batch's transaction, before its readings are written. The lock keeps
the row until the commit (erasure's FOR UPDATE waits for it, store/erasure.py), and a patient
erased before it is found missing, as the foreign key would have found it.

SQLite keeps the foreign keys (one writer at a time, and its rows are not the cost there).
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import ColumnElement, ScalarSelect, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.crypto.errors import DataKeyDestroyed
from medmesh.domain.errors import NotFound
from medmesh.store._sql import any_of
from medmesh.store.schema import devices, patients


def _held(column: ColumnElement[str], name: str) -> ScalarSelect[int]:
    locked = select(column).where(any_of(column, name)).with_for_update(read=True, key_share=True)
    return select(func.count()).select_from(locked.cte(f"held_{name}")).scalar_subquery()


# Built once (store/_sql.py says why): the owners found, each row locked FOR KEY SHARE.
_HOLD = select(_held(patients.c.id, "patients"), _held(devices.c.id, "devices"))


async def hold_owners(
    conn: AsyncConnection, patient_ids: Collection[str], device_ids: Collection[str]
) -> None:
    """Lock the rows of these patients and devices FOR KEY SHARE until the transaction ends.

    Raises DataKeyDestroyed when a patient has no row (erased: a process may still hold their
    key in its cache) and NotFound when a device has none. Does nothing on SQLite, whose
    foreign keys check each row.
    """
    if conn.dialect.name != "postgresql" or not (patient_ids or device_ids):
        return
    wanted = {"patients": sorted(set(patient_ids)), "devices": sorted(set(device_ids))}
    held_patients, held_devices = (await conn.execute(_HOLD, wanted)).one()
    if held_patients != len(wanted["patients"]):
        raise DataKeyDestroyed("readings for a patient who no longer exists (erased?)")
    if held_devices != len(wanted["devices"]):
        raise NotFound("readings from a device that is not registered")
