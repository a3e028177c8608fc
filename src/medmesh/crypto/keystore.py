"""Where wrapped per-patient data keys live: NOT in the main database, so that a copy, replica
or backup of the main database never holds a key. `LocalKeyStore` is a small SQLite file with
secure_delete on (a destroyed key's bytes are overwritten); a KMS or a secrets store plugs in by
implementing `PatientKeyStore`."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from medmesh.crypto.keyring import WrappedKey


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A patient's wrapped data key; `key_id` names the data key itself (for certificates)."""

    patient_id: str
    key_id: str
    wrapped: WrappedKey


class PatientKeyStore(Protocol):
    async def get(self, patient_id: str) -> StoredKey | None:
        """The patient's key, or None when they have none (yet, or any more)."""
        ...

    async def get_many(self, patient_ids: list[str]) -> dict[str, StoredKey]:
        """The keys of those of these patients that have one, in one round trip."""
        ...

    async def add_if_absent(self, key: StoredKey) -> StoredKey:
        """Store `key` unless the patient has one; returns the one stored (race-safe).
        Raises KeyError when the patient's key was destroyed: an erased patient gets no new
        key."""
        ...

    async def destroy(self, patient_id: str) -> str | None:
        """Destroy the patient's key for good; returns its key id (None: there was none)."""
        ...

    async def was_destroyed(self, patient_id: str) -> bool: ...

    async def destroyed(self) -> list[str]:
        """Every owner whose key was destroyed (the tombstones), sorted: what a restored
        backup must not bring back (docs/backups.md)."""
        ...

    async def wrapped_with_other_than(self, master_key_id: str, limit: int) -> list[StoredKey]:
        """Up to `limit` keys wrapped by a master key version other than `master_key_id`."""
        ...

    async def replace_wrapping(self, old: StoredKey, new: WrappedKey) -> bool:
        """Swap a key's wrapping if it is still `old.wrapped` (a compare-and-set)."""
        ...

    async def count_by_master_key(self) -> dict[str, int]: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS patient_keys (
    patient_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL UNIQUE,
    wrapped_key BLOB NOT NULL,
    master_key_id TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_patient_keys_master_key_id ON patient_keys (master_key_id);
CREATE TABLE IF NOT EXISTS destroyed_keys (
    patient_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    destroyed_at TEXT NOT NULL
);
"""


class LocalKeyStore:
    """Wrapped data keys in their own SQLite file (mode 0600), shared by local processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            path.touch(mode=0o600)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            # secure_delete: freed pages are zeroed, so a destroyed key leaves no bytes behind.
            # A rollback journal (not WAL) so no old page image outlives the transaction.
            db.execute("PRAGMA secure_delete=ON")
            db.execute("PRAGMA journal_mode=DELETE")
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    def _get(self, patient_id: str) -> StoredKey | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT key_id, master_key_id, wrapped_key FROM patient_keys WHERE patient_id = ?",
                (patient_id,),
            ).fetchone()
        return None if row is None else StoredKey(patient_id, row[0], WrappedKey(row[1], row[2]))

    async def get(self, patient_id: str) -> StoredKey | None:
        return await asyncio.to_thread(self._get, patient_id)

    def _get_many(self, patient_ids: list[str]) -> dict[str, StoredKey]:
        with self._connect() as db:
            # One bound parameter (a JSON list), whatever the number of patients.
            rows = db.execute(
                "SELECT patient_id, key_id, master_key_id, wrapped_key FROM patient_keys "
                "WHERE patient_id IN (SELECT value FROM json_each(?))",
                (json.dumps(patient_ids),),
            ).fetchall()
        return {p: StoredKey(p, k, WrappedKey(m, w)) for p, k, m, w in rows}

    async def get_many(self, patient_ids: list[str]) -> dict[str, StoredKey]:
        if not patient_ids:
            return {}
        return await asyncio.to_thread(self._get_many, patient_ids)

    def _add_if_absent(self, key: StoredKey) -> StoredKey:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                gone = db.execute(
                    "SELECT 1 FROM destroyed_keys WHERE patient_id = ?", (key.patient_id,)
                ).fetchone()
                if gone is not None:
                    raise KeyError(key.patient_id)
                db.execute(
                    "INSERT OR IGNORE INTO patient_keys VALUES (?, ?, ?, ?, ?)",
                    (
                        key.patient_id,
                        key.key_id,
                        key.wrapped.blob,
                        key.wrapped.master_key_id,
                        datetime.now(UTC).isoformat(),
                    ),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        stored = self._get(key.patient_id)
        assert stored is not None
        return stored

    async def add_if_absent(self, key: StoredKey) -> StoredKey:
        return await asyncio.to_thread(self._add_if_absent, key)

    def _destroy(self, patient_id: str) -> str | None:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(
                "SELECT key_id FROM patient_keys WHERE patient_id = ?", (patient_id,)
            ).fetchone()
            db.execute("DELETE FROM patient_keys WHERE patient_id = ?", (patient_id,))
            db.execute(
                "INSERT OR IGNORE INTO destroyed_keys VALUES (?, ?, ?)",
                (patient_id, row[0] if row else "", datetime.now(UTC).isoformat()),
            )
            db.execute("COMMIT")
        return None if row is None else str(row[0])

    async def destroy(self, patient_id: str) -> str | None:
        return await asyncio.to_thread(self._destroy, patient_id)

    def _was_destroyed(self, patient_id: str) -> bool:
        with self._connect() as db:
            query = "SELECT 1 FROM destroyed_keys WHERE patient_id = ?"
            return db.execute(query, (patient_id,)).fetchone() is not None

    async def was_destroyed(self, patient_id: str) -> bool:
        return await asyncio.to_thread(self._was_destroyed, patient_id)

    def _destroyed(self) -> list[str]:
        with self._connect() as db:
            rows = db.execute("SELECT patient_id FROM destroyed_keys ORDER BY patient_id")
            return [str(row[0]) for row in rows.fetchall()]

    async def destroyed(self) -> list[str]:
        return await asyncio.to_thread(self._destroyed)

    def _wrapped_with_other_than(self, master_key_id: str, limit: int) -> list[StoredKey]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT patient_id, key_id, master_key_id, wrapped_key FROM patient_keys "
                "WHERE master_key_id <> ? ORDER BY patient_id LIMIT ?",
                (master_key_id, limit),
            ).fetchall()
        return [StoredKey(p, k, WrappedKey(m, w)) for p, k, m, w in rows]

    async def wrapped_with_other_than(self, master_key_id: str, limit: int) -> list[StoredKey]:
        return await asyncio.to_thread(self._wrapped_with_other_than, master_key_id, limit)

    def _replace_wrapping(self, old: StoredKey, new: WrappedKey) -> bool:
        with self._connect() as db:
            cursor = db.execute(
                "UPDATE patient_keys SET wrapped_key = ?, master_key_id = ? "
                "WHERE patient_id = ? AND master_key_id = ? AND wrapped_key = ?",
                (
                    new.blob,
                    new.master_key_id,
                    old.patient_id,
                    old.wrapped.master_key_id,
                    old.wrapped.blob,
                ),
            )
            return cursor.rowcount == 1

    async def replace_wrapping(self, old: StoredKey, new: WrappedKey) -> bool:
        return await asyncio.to_thread(self._replace_wrapping, old, new)

    def _count_by_master_key(self) -> dict[str, int]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT master_key_id, count(*) FROM patient_keys GROUP BY master_key_id"
            ).fetchall()
        return {str(k): int(n) for k, n in rows}

    async def count_by_master_key(self) -> dict[str, int]:
        return await asyncio.to_thread(self._count_by_master_key)
