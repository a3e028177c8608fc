"""Encryption at rest on both backends: health data round-trips through the patient's data key,
the main database holds only ciphertext, tampered or moved ciphertext is refused, and the master
key rotates while the platform keeps reading and writing."""

from __future__ import annotations

import asyncio
import stat
import struct
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from medmesh import provisioning
from medmesh.cli import app
from medmesh.crypto import rotation
from medmesh.crypto.errors import KeyringError, Undecryptable
from medmesh.crypto.keyring import LocalKeyFile
from medmesh.store import migrate
from medmesh.store.database import Database
from medmesh.store.observations import ObservationQuery, Observations
from medmesh.store.registry import Patients
from medmesh.store.schema import observations, patients
from medmesh.store.vitals import Vitals
from tests.conftest import World, make_world
from tests.crypto_fixtures import (
    START,
    blood_pressure,
    heart_rate,
    keyed_database,
    raw_rows,
    store,
)
from tests.helpers import reading
from tests.live_server import live_server


@pytest.fixture
async def keyed(database_url: str, tmp_path: Path) -> AsyncIterator[Database]:
    """The database with keys of its own: rotation and retirement change nobody else's."""
    database = keyed_database(database_url, tmp_path / "keys")
    yield database
    await database.dispose()


@pytest.fixture
async def keyed_world(keyed: Database) -> World:
    return await make_world(keyed)


async def test_readings_and_demographics_round_trip_through_the_patients_key(
    database: Database, world: World
) -> None:
    await store(
        database,
        [heart_rate(world.patient_id, world.device_id, 0, 72.5)]
        + [blood_pressure(world.patient_id, world.device_id, 1, 128.0, 81.0)],
    )
    born = await provisioning.create_patient(
        database, family="Müller", given="Zoë", identifier="MRN-Z", birth_date=date(1950, 2, 3)
    )
    async with database.read() as conn:
        found = await Observations(conn).search(ObservationQuery(patient_id=world.patient_id))
        again = await Patients(conn).get(born.id)
        latest = await Vitals(conn).latest([world.patient_id], ["8867-4", "85354-9"])
    assert [[v.value for v in o.values] for o in found] == [[72.5], [81.0, 128.0]]  # by code
    assert again == born
    assert latest[(world.patient_id, "85354-9")].values == {"8480-6": 128.0, "8462-4": 81.0}


async def test_the_main_database_holds_no_plaintext_names_identifiers_or_values(
    database: Database, world: World
) -> None:
    await provisioning.create_patient(
        database,
        family="Ashworth",
        given="Penelope",
        identifier="NHS-4857773456",
        birth_date=date(1961, 7, 30),
    )
    await store(
        database,
        [heart_rate(world.patient_id, world.device_id, 0, 72.5)]
        + [blood_pressure(world.patient_id, world.device_id, 1, 128.0, 81.0)],
    )
    async with database.read() as conn:
        every_patient = (await conn.execute(select(patients))).mappings().all()
    stored = b"".join(
        bytes(r[c] or b"") + str(r["identifier_index"]).encode()
        for r in every_patient
        for c in ("family", "given", "identifier_value", "birth_date")
    )
    for secret in (b"Ashworth", b"Penelope", b"4857773456", b"1961", b"Doe", b"Jane", b"MRN-1"):
        assert secret not in stored
    rows = await raw_rows(database, world.patient_id)
    values = [bytes(r["value"]) for r in rows["observations"] if r["value"] is not None]
    values += [bytes(r["value"]) for r in rows["observation_components"]]
    assert len(values) == 3
    for sealed, plain in zip(values, (72.5, 128.0, 81.0), strict=False):
        assert sealed[0] == 1 and len(sealed) == 1 + 12 + 8 + 16  # version, nonce, value, tag
        assert struct.pack(">d", plain) not in sealed


async def test_patients_are_still_found_by_identifier_and_by_name_prefix(
    database: Database, world: World
) -> None:
    await provisioning.create_patient(database, family="Dobson", given="Adam", identifier="MRN-2")
    await provisioning.create_patient(database, family="Smith", given="Dorothy", identifier="MRN-3")
    async with database.read() as conn:
        repo = Patients(conn)
        by_identifier = await repo.find_by_identifier(None, "MRN-2")
        named = await repo.search(name="do")
        second_page = await repo.search(name="do", limit=1, offset=1)
        nobody = await repo.find_by_identifier("urn:medmesh:mrn", "MRN-404")
    assert by_identifier is not None and by_identifier.family == "Dobson"
    assert [p.family for p in named] == ["Dobson", "Doe", "Smith"]
    assert [p.family for p in second_page] == ["Doe"]
    assert nobody is None


async def _first_two_observations(database: Database) -> list[tuple[str, bytes]]:
    async with database.read() as conn:
        rows = await conn.execute(
            select(observations.c.id, observations.c.value).order_by(observations.c.effective)
        )
        return [(i, bytes(v)) for i, v in rows]


async def test_tampered_ciphertext_does_not_decrypt(database: Database, world: World) -> None:
    await store(database, [heart_rate(world.patient_id, world.device_id, 0, 72.5)])
    [(row_id, sealed)] = await _first_two_observations(database)
    tampered = sealed[:-1] + bytes((sealed[-1] ^ 1,))
    async with database.write() as conn:
        await conn.execute(
            update(observations).where(observations.c.id == row_id).values(value=tampered)
        )
    async with database.read() as conn:
        with pytest.raises(Undecryptable):
            await Observations(conn).get(row_id)
        with pytest.raises(Undecryptable):  # the chart's batch path checks the same
            await Vitals(conn).series(world.patient_id, "8867-4", after=START - timedelta(1))


async def test_ciphertext_moved_to_another_row_does_not_decrypt(
    database: Database, world: World
) -> None:
    await store(
        database,
        [heart_rate(world.patient_id, world.device_id, n, 60.0 + n) for n in range(2)],
    )
    (first, first_value), (second, _) = await _first_two_observations(database)
    async with database.write() as conn:
        await conn.execute(
            update(observations).where(observations.c.id == second).values(value=first_value)
        )
    async with database.read() as conn:
        assert (await Observations(conn).get(first)).values[0].value == 60.0
        with pytest.raises(Undecryptable):
            await Observations(conn).get(second)


async def test_ciphertext_moved_to_another_patient_does_not_decrypt(
    database: Database, world: World
) -> None:
    other = await provisioning.create_patient(
        database, family="Roe", given="Rick", identifier="MRN-9"
    )
    async with database.read() as conn:
        doe = (
            await conn.execute(select(patients.c.family).where(patients.c.id == world.patient_id))
        ).scalar_one()
    async with database.write() as conn:
        # Same column, same row id scheme: only the patient (and so the key) differs.
        await conn.execute(update(patients).where(patients.c.id == other.id).values(family=doe))
    async with database.read() as conn:
        assert (await Patients(conn).get(world.patient_id)).family == "Doe"
        with pytest.raises(Undecryptable):
            await Patients(conn).get(other.id)


async def test_master_key_rotates_while_the_platform_keeps_reading_and_writing(
    keyed: Database, keyed_world: World, database_url: str, tmp_path: Path
) -> None:
    world = keyed_world
    for n in range(3):
        await provisioning.create_patient(keyed, family=f"F{n}", given="G", identifier=f"ROT-{n}")
    await store(keyed, [heart_rate(world.patient_id, world.device_id, n, 70.0) for n in range(5)])
    # Another process serving the same deployment, with its own keyring instance and key cache.
    server = keyed_database(database_url, tmp_path / "keys")
    rotated = asyncio.Event()
    writes = 0

    async def keep_serving() -> None:
        nonlocal writes
        while not rotated.is_set():
            reading = heart_rate(world.patient_id, world.device_id, 100 + writes, 80.0)
            await store(server, [reading])
            server.cipher.forget_cached()  # every read unwraps again, mid-rotation
            async with server.read() as conn:
                found = await Observations(conn).search(
                    ObservationQuery(patient_id=world.patient_id, limit=1000)
                )
                await Patients(conn).search()
            assert {o.values[0].value for o in found} == {70.0, 80.0}
            writes += 1

    async def rotate() -> rotation.RotationReport:
        try:
            return await rotation.rotate(keyed.cipher, batch_size=1)
        finally:
            rotated.set()

    serving = asyncio.create_task(keep_serving())
    report = await rotate()
    await serving
    assert writes >= 1  # the server wrote and read while keys were being rewrapped
    assert report.new_key_id == "mk-2"
    assert report.rewrapped == 4
    assert report.by_master_key == {"mk-2": 4}
    created = await provisioning.create_patient(
        server, family="New", given="N", identifier="ROT-new"
    )
    stored_key = await server.cipher.keys.get(created.id)
    assert stored_key is not None and stored_key.wrapped.master_key_id == "mk-2"

    await rotation.retire(keyed.cipher, "mk-1")
    assert keyed.cipher.provider.key_ids() == ["mk-2"]
    fresh = keyed_database(database_url, tmp_path / "keys")  # a restarted process
    try:
        async with fresh.read() as conn:
            found = await Observations(conn).search(
                ObservationQuery(patient_id=world.patient_id, limit=1000)
            )
            names = {p.family for p in await Patients(conn).search()}
        assert len(found) == 5 + writes
        assert names == {"Doe", "F0", "F1", "F2", "New"}
    finally:
        await fresh.dispose()
        await server.dispose()


async def test_an_old_master_key_cannot_be_retired_while_it_still_wraps_data_keys(
    keyed: Database, keyed_world: World
) -> None:
    await keyed.cipher.provider.add_version()
    with pytest.raises(KeyringError, match="still wrapped with mk-1"):
        await rotation.retire(keyed.cipher, "mk-1")
    assert keyed.cipher.provider.key_ids() == ["mk-1", "mk-2"]


def test_the_keyring_file_is_created_private_and_refused_when_others_can_read_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys" / "master.json"
    LocalKeyFile(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    with pytest.raises(KeyringError, match="readable by other users"):
        LocalKeyFile(path)


async def test_migration_0005_refuses_a_database_holding_plaintext_patients(
    tmp_path: Path,
) -> None:
    database = Database(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        await migrate.upgrade(database, "0004")
        async with database.write() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO patients (id, identifier_system, identifier_value, family, given, "
                "created_at) VALUES ('p1', 'urn:x', 'MRN-OLD', 'Old', 'Row', '2026-01-01')"
            )
        with pytest.raises(RuntimeError, match=r"1 rows in patients stored in plaintext"):
            await migrate.upgrade(database)
        async with database.read() as conn:
            family = (await conn.exec_driver_sql("SELECT family FROM patients")).scalar_one()
        assert family == "Old"  # refused in its transaction: nothing changed
    finally:
        await database.dispose()


async def test_month_chart_buckets_are_computed_from_decrypted_values(
    database: Database, world: World
) -> None:
    await store(
        database,
        [heart_rate(world.patient_id, world.device_id, n, float(60 + n % 3)) for n in range(9)],
    )
    async with database.read() as conn:
        buckets = await Vitals(conn).buckets(
            world.patient_id, "8867-4", origin=START - timedelta(seconds=30), width=180.0
        )
    # Readings at minutes 0..8 (values 60, 61, 62, 60, …), 3-minute buckets, none on an edge.
    assert [(i, b.count, b.low, b.high, b.mean) for i, b in buckets] == [
        (0, 3, 60.0, 62.0, 61.0),
        (1, 3, 60.0, 62.0, 61.0),
        (2, 3, 60.0, 62.0, 61.0),
    ]


def test_the_cli_reports_rotates_and_retires_master_keys(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDMESH_DATABASE_URL", database_url)
    monkeypatch.setenv("MEDMESH_MASTER_KEY_FILE", str(tmp_path / "keys" / "master-keys.json"))
    monkeypatch.setenv("MEDMESH_KEY_STORE_PATH", str(tmp_path / "keys" / "patient-keys.db"))
    runner = CliRunner()
    for n in range(2):
        created = runner.invoke(
            app, ["patient", "create", "--family", f"K{n}", "--given", "G", "--identifier", f"K{n}"]
        )
        assert created.exit_code == 0, created.output
    status = runner.invoke(app, ["keys", "status"])
    assert status.exit_code == 0 and "mk-1 (active): wraps 2 data keys" in status.output
    refused = runner.invoke(app, ["keys", "retire", "mk-1"])
    assert refused.exit_code == 1 and "still wrapped with mk-1" in refused.output
    rotated = runner.invoke(app, ["keys", "rotate", "--batch-size", "1"])
    assert rotated.exit_code == 0, rotated.output
    assert "new active master key: mk-2" in rotated.output
    assert "data keys rewrapped: 2" in rotated.output
    retired = runner.invoke(app, ["keys", "retire", "mk-1"])
    assert retired.exit_code == 0, retired.output
    status = runner.invoke(app, ["keys", "status"])
    assert status.output.strip() == "mk-2 (active): wraps 2 data keys"
    found = runner.invoke(
        app, ["patient", "create", "--family", "K0", "--given", "G", "--identifier", "K0"]
    )
    assert found.exit_code == 1 and "already exists" in found.output  # the blind index survived


async def test_a_running_server_keeps_ingesting_and_serving_during_rotation(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "keys"
    monkeypatch.setenv("MEDMESH_MASTER_KEY_FILE", str(keys / "master-keys.json"))
    monkeypatch.setenv("MEDMESH_KEY_STORE_PATH", str(keys / "patient-keys.db"))
    admin_side = keyed_database(database_url, keys)
    try:
        world = await make_world(admin_side)
        for n in range(20):
            await provisioning.create_patient(
                admin_side, family=f"R{n}", given="G", identifier=f"R-{n}"
            )
        # The organisation's own integration sees all its patients (the clinician, their own).
        service = await provisioning.issue_service_token(
            admin_side, name="ehr", scopes="system/*.rs"
        )
        with live_server(database_url, tmp_path / "server.log") as server:
            rotated = asyncio.Event()
            sent = 0
            async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:

                async def keep_using_the_server() -> None:
                    nonlocal sent
                    while not rotated.is_set() or sent == 0:
                        batch = [reading(f"rot-{sent}", value=70 + sent % 20)]
                        posted = await http.post(
                            "/ingest/v1/readings",
                            json={"readings": batch},
                            headers=world.device_headers,
                        )
                        assert posted.status_code == 202, posted.text
                        sent += 1
                        found = await http.get(
                            "/fhir/Observation",
                            params={"patient": world.patient_id, "_count": "1000"},
                            headers=world.reader_headers,
                        )
                        assert found.status_code == 200
                        assert len(found.json().get("entry", [])) == sent
                        named = await http.get(
                            "/fhir/Patient",
                            params={"name": "r1"},
                            headers={"Authorization": f"Bearer {service}"},
                        )
                        assert named.status_code == 200
                        assert len(named.json()["entry"]) == 11  # R1, R10…R19

                async def rotate() -> rotation.RotationReport:
                    try:
                        return await rotation.rotate(admin_side.cipher, batch_size=2)
                    finally:
                        rotated.set()

                using = asyncio.create_task(keep_using_the_server())
                report = await rotate()
                await using
                assert report.by_master_key == {"mk-2": 21}
                await rotation.retire(admin_side.cipher, "mk-1")
                # Everything the server stored still opens with mk-1 gone (it re-reads the
                # keyring when it changes).
                after = await http.get(
                    "/fhir/Observation",
                    params={"patient": world.patient_id, "_count": "1000"},
                    headers=world.reader_headers,
                )
                values = {e["resource"]["valueQuantity"]["value"] for e in after.json()["entry"]}
        assert len(values) == min(sent, 20) and sent >= 1
        assert (await admin_side.cipher.keys.count_by_master_key()) == {"mk-2": 21}
    finally:
        await admin_side.dispose()
