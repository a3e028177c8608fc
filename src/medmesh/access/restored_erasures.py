"""Erasures a restored backup predates: the key store's tombstones outlive any restore of the
main database, so the patients erased after the backup was taken are found (their data keys
are gone: their restored rows are unreadable ciphertext) and their rows can be deleted again."""

from __future__ import annotations

from medmesh.store.database import Database
from medmesh.store.erasure import PatientRecords


async def erased_patients_present(database: Database) -> list[str]:
    """Patients whose data key was destroyed but who have rows in the database again."""
    tombstones = await database.cipher.keys.destroyed()
    async with database.read() as conn:
        return await PatientRecords(conn).present(tombstones)


async def delete_erased_rows(database: Database, patient_ids: list[str]) -> dict[str, int]:
    """Delete every row of these erased patients again (one transaction each); returns the
    rows deleted per patient. Refuses a patient whose key is not destroyed."""
    deleted: dict[str, int] = {}
    for patient_id in patient_ids:
        if not await database.cipher.keys.was_destroyed(patient_id):
            raise ValueError(f"patient {patient_id} was not erased; refusing to delete their rows")
        async with database.write() as conn:
            counts = await PatientRecords(conn).delete_all(patient_id)
        deleted[patient_id] = sum(counts.values())
    return deleted
