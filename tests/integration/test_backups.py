"""Backups on both backends, through the real `medmesh` command line: a backup holds no key
material, and an erasure done after a backup still holds when that backup is restored (the
patient stays unreadable, the restore names them and can delete their rows again)."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from medmesh.crypto.errors import DataKeyDestroyed
from medmesh.domain.errors import NotFound
from medmesh.store.database import Database
from medmesh.store.observations import ObservationQuery, Observations
from medmesh.store.registry import Patients
from tests.conftest import World, make_world
from tests.crypto_fixtures import heart_rate, keyed_database, raw_rows, store


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def cli_env(database_url: str, keys_dir: Path) -> dict[str, str]:
    """How an operator configures the CLI: the database and the two key files."""
    return {
        **os.environ,
        "MEDMESH_DATABASE_URL": database_url,
        "MEDMESH_MASTER_KEY_FILE": str(keys_dir / "master-keys.json"),
        "MEDMESH_KEY_STORE_PATH": str(keys_dir / "patient-keys.db"),
    }


def medmesh(
    env: dict[str, str], *args: str, answer: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medmesh", *args],
        input=answer,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


async def _two_patients(database_url: str, keys_dir: Path) -> tuple[World, World]:
    database = keyed_database(database_url, keys_dir)
    try:
        erased = await make_world(database, "MRN-ERASED")
        kept = await make_world(database, "MRN-KEPT")
        await store(
            database,
            [heart_rate(erased.patient_id, erased.device_id, n, 90.0 + n) for n in range(3)]
            + [heart_rate(kept.patient_id, kept.device_id, n, 60.0 + n) for n in range(3)],
        )
    finally:
        await database.dispose()
    return erased, kept


@pytest.fixture
async def patients_backed_up(
    database_url: str, keys_dir: Path, cli_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[tuple[World, World, Path]]:
    erased, kept = await _two_patients(database_url, keys_dir)
    backup_file = tmp_path / "medmesh.backup"
    done = medmesh(cli_env, "backup", str(backup_file))
    assert done.returncode == 0, done.stderr
    assert "no key material" in done.stdout
    assert str(keys_dir / "patient-keys.db") in done.stdout
    yield erased, kept, backup_file


def _backup_text(database_url: str, backup_file: Path) -> bytes:
    """What the backup holds, readable: the SQLite file itself, or the SQL pg_restore makes of
    the (compressed) custom-format archive."""
    if database_url.startswith("sqlite"):
        return backup_file.read_bytes()
    done = subprocess.run(
        ["pg_restore", "--file=-", str(backup_file)], capture_output=True, check=True
    )
    return done.stdout


def _key_material(keys_dir: Path) -> list[bytes]:
    """Every secret of the keyring and every wrapped data key, in the encodings they could be
    copied in (raw, base64, hex)."""
    keyring = json.loads((keys_dir / "master-keys.json").read_text())
    secrets = [base64.b64decode(v) for v in keyring["master_keys"].values()]
    secrets += [base64.b64decode(keyring["index_key"]), base64.b64decode(keyring["signing_key"])]
    with sqlite3.connect(keys_dir / "patient-keys.db") as db:
        secrets += [bytes(row[0]) for row in db.execute("SELECT wrapped_key FROM patient_keys")]
    db.close()
    assert len(secrets) >= 5  # three keyring secrets and the two patients' data keys
    encodings: list[bytes] = []
    for secret in secrets:
        encodings += [secret, base64.b64encode(secret), secret.hex().encode()]
    return encodings


async def _readable_heart_rates(database: Database, patient_id: str) -> list[float]:
    async with database.read() as conn:
        found = await Observations(conn).search(ObservationQuery(patient_id=patient_id))
    return sorted(value.value for o in found for value in o.values)


async def test_a_backup_holds_no_key_material(
    database_url: str, keys_dir: Path, patients_backed_up: tuple[World, World, Path]
) -> None:
    _, _, backup_file = patients_backed_up
    holds = _backup_text(database_url, backup_file)
    assert b"CREATE TABLE" in holds or b"SQLite format 3" in holds  # it is a real copy
    for encoded in _key_material(keys_dir):
        assert encoded not in holds


async def test_an_erasure_after_a_backup_holds_when_the_backup_is_restored(
    database_url: str,
    keys_dir: Path,
    cli_env: dict[str, str],
    patients_backed_up: tuple[World, World, Path],
) -> None:
    erased, kept, backup_file = patients_backed_up
    done = medmesh(
        cli_env,
        "patient",
        "erase",
        erased.patient_id,
        "--reason",
        "patient's request",
        "--requested-by",
        "dpo",
    )
    assert done.returncode == 0, done.stderr

    # Asked whether to delete them, the operator says no.
    done = medmesh(cli_env, "restore", str(backup_file), answer="n\n")
    assert done.returncode == 0, done.stderr
    assert "delete their rows again?" in done.stdout
    assert "kept: their rows stay as unreadable ciphertext" in done.stdout
    assert "erased patients in the backup: 1" in done.stdout
    assert f"  {erased.patient_id}\n" in done.stdout
    assert kept.patient_id not in done.stdout

    database = keyed_database(database_url, keys_dir)
    try:
        # The backup brought the erased patient's rows back, as ciphertext nobody can open.
        rows = await raw_rows(database, erased.patient_id)
        assert len(rows["patients"]) == 1 and len(rows["observations"]) == 3
        async with database.read() as conn:
            # A patient whose key is gone reads as absent (store/registry.py).
            with pytest.raises(NotFound):
                await Patients(conn).get(erased.patient_id)
        with pytest.raises(DataKeyDestroyed):
            await _readable_heart_rates(database, erased.patient_id)
        # The other patient came back whole.
        assert await _readable_heart_rates(database, kept.patient_id) == [60.0, 61.0, 62.0]
    finally:
        await database.dispose()

    done = medmesh(cli_env, "restore", str(backup_file), "--delete-erased")
    assert done.returncode == 0, done.stderr
    assert f"deleted again: {erased.patient_id}" in done.stdout

    database = keyed_database(database_url, keys_dir)
    try:
        rows = await raw_rows(database, erased.patient_id)
        assert rows["patients"] == [] and rows["observations"] == []
        async with database.read() as conn:
            with pytest.raises(NotFound):
                await Patients(conn).get(erased.patient_id)
            assert (await Patients(conn).get(kept.patient_id)).family == "Doe"
        assert await _readable_heart_rates(database, kept.patient_id) == [60.0, 61.0, 62.0]
    finally:
        await database.dispose()


async def test_a_restore_without_erasures_since_reports_none(
    cli_env: dict[str, str], patients_backed_up: tuple[World, World, Path]
) -> None:
    _, _, backup_file = patients_backed_up
    done = medmesh(cli_env, "restore", str(backup_file))
    assert done.returncode == 0, done.stderr
    assert "erased patients in the backup: none" in done.stdout


def test_a_backup_never_overwrites_a_file(cli_env: dict[str, str], tmp_path: Path) -> None:
    existing = tmp_path / "already-there"
    existing.write_text("keep me")
    done = medmesh(cli_env, "backup", str(existing))
    assert done.returncode == 1
    assert "exists already" in done.stderr
    assert existing.read_text() == "keep me"


async def test_a_damaged_backup_is_refused_and_changes_nothing(
    database_url: str, keys_dir: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    _, kept = await _two_patients(database_url, keys_dir)
    damaged = tmp_path / "damaged.backup"
    damaged.write_bytes(b"PGDMP" + os.urandom(4096))
    done = medmesh(cli_env, "restore", str(damaged), "--keep-erased")
    assert done.returncode == 1
    assert "nothing changed" in done.stderr
    database = keyed_database(database_url, keys_dir)
    try:
        assert await _readable_heart_rates(database, kept.patient_id) == [60.0, 61.0, 62.0]
    finally:
        await database.dispose()
