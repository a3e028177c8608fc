"""Erasure on both backends, as issue 5 checks it: after erasure the patient's rows are gone
and a copy of the database taken before erasure can no longer decrypt their data; a legal hold
refuses it; the certificate verifies and a modified one does not."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from medmesh import provisioning
from medmesh.access.erasure import (
    LegalHold,
    WithinRetention,
    erase_patient,
    set_legal_hold,
    verify_certificate,
)
from medmesh.access.identity.principals import Role
from medmesh.cli import app
from medmesh.crypto.errors import DataKeyDestroyed
from medmesh.crypto.keyring import LocalKeyFile
from medmesh.events.model import ALERT, Event
from medmesh.store.database import Database
from medmesh.store.dead_letters import DeadLetter, DeadLetters
from medmesh.store.observations import VALUE, ObservationQuery, Observations
from medmesh.store.registry import Patients
from medmesh.store.rollups import HOUR, Rollups
from medmesh.store.schema import (
    api_tokens,
    audit_log,
    care_plans,
    consents,
    erasure_certificates,
    export_jobs,
    observation_rollups,
    observations,
    patients,
    subscriptions,
    users,
)
from medmesh.store.webhook_deliveries import WebhookDeliveries
from tests.conftest import World, make_world
from tests.crypto_fixtures import (
    START,
    blood_pressure,
    heart_rate,
    keyed_database,
    raw_rows,
    store,
)

NOW = datetime(2026, 11, 25, tzinfo=UTC)


@pytest.fixture
async def keyed(database_url: str, tmp_path: Path) -> AsyncIterator[Database]:
    database = keyed_database(database_url, tmp_path / "keys")
    yield database
    await database.dispose()


@pytest.fixture
async def keyed_world(keyed: Database) -> World:
    world = await make_world(keyed)
    await store(
        keyed,
        [heart_rate(world.patient_id, world.device_id, n, 70.0 + n) for n in range(3)]
        + [blood_pressure(world.patient_id, world.device_id, 5, 131.0, 84.0)],
    )
    return world


async def _erase(database: Database, patient_id: str) -> dict[str, object]:
    certificate = await erase_patient(
        database, patient_id, reason="patient's request of 2026-11-20", requested_by="dpo"
    )
    return certificate.document


async def test_after_erasure_the_rows_are_gone_and_a_copy_taken_before_cannot_be_decrypted(
    keyed: Database, keyed_world: World, database_url: str, tmp_path: Path
) -> None:
    patient_id = keyed_world.patient_id
    # The copy taken before erasure: the patient's rows as stored (any backend) and, on SQLite,
    # the whole database file through SQLite's online backup.
    copied = await raw_rows(keyed, patient_id)
    copy_url = None
    if keyed.backend == "sqlite":
        source = make_url(database_url).database
        assert source is not None
        copy_path = tmp_path / "backup-before-erasure.db"
        with sqlite3.connect(source) as live, sqlite3.connect(copy_path) as backup:
            live.backup(backup)
        copy_url = f"sqlite:///{copy_path}"
    [old_value] = [r for r in copied["observations"] if r["message_id"].endswith("-0")]
    key = await keyed.cipher.key(patient_id)
    assert key.open_float(old_value["value"], VALUE, old_value["id"]) == 70.0  # readable before
    async with keyed.read() as conn:
        [hourly] = await Rollups(conn).read(
            patient_id, "8867-4", resolution=HOUR, since=START, until=NOW
        )
    assert (hourly.stats.count, hourly.stats.low, hourly.stats.high) == (3, 70.0, 72.0)
    assert len(copied["observation_rollups"]) == 8
    wrapped = await keyed.cipher.keys.get(patient_id)
    assert wrapped is not None

    await _erase(keyed, patient_id)

    assert await raw_rows(keyed, patient_id) == {
        "patients": [],
        "observations": [],
        "observation_components": [],
        "observation_rollups": [],
    }
    # The platform's keys, in this process and in a freshly started one, open nothing of it.
    restarted = keyed_database(database_url, tmp_path / "keys")
    try:
        for cipher in (keyed.cipher, restarted.cipher):
            with pytest.raises(DataKeyDestroyed):
                await cipher.key(patient_id)
        if copy_url is not None:
            backup_database = Database(copy_url, cipher=restarted.cipher)
            try:
                async with backup_database.read() as conn:
                    count = select(func.count()).select_from(observations)
                    assert (await conn.execute(count)).scalar_one() == 4  # ciphertext is there
                    with pytest.raises(DataKeyDestroyed):
                        await Observations(conn).search(ObservationQuery(patient_id=patient_id))
                    rollups = select(func.count()).select_from(observation_rollups)
                    assert (await conn.execute(rollups)).scalar_one() == 8  # sealed stats
                    with pytest.raises(DataKeyDestroyed):
                        await Rollups(conn).read(
                            patient_id, "8867-4", resolution=HOUR, since=START, until=NOW
                        )
                    assert await Patients(conn).get_many([patient_id]) == []
            finally:
                await backup_database.dispose()
    finally:
        await restarted.dispose()
    # Nor is the wrapped key anywhere in the key store's file: secure_delete overwrote it.
    assert wrapped.wrapped.blob not in (tmp_path / "keys" / "patient-keys.db").read_bytes()


async def test_erasure_deletes_every_row_about_the_patient_and_nothing_of_others(
    keyed: Database, keyed_world: World
) -> None:
    patient_id = keyed_world.patient_id
    other = await make_world(keyed, identifier="MRN-OTHER")
    await store(keyed, [heart_rate(other.patient_id, other.device_id, 0, 66.0)])
    account = await provisioning.create_user(
        keyed,
        username="jane",
        display_name="Jane",
        role=Role.PATIENT,
        password="a long enough passphrase 42",
        patient_id=patient_id,
    )
    async with keyed.write() as conn:
        await conn.execute(
            consents.insert().values(
                id="c1",
                patient_id=patient_id,
                status="active",
                grantee_type="Organization",
                grantee_id="default",
                categories="[]",
                purposes="[]",
                created_at=NOW,
                created_by="jane",
            )
        )
        await conn.execute(
            care_plans.insert().values(
                patient_id=patient_id,
                thresholds="{}",
                schedule="{}",
                updated_at=NOW,
                updated_by="dr",
            )
        )
        await conn.execute(
            api_tokens.insert().values(
                id="t1",
                name="jane's app",
                role="patient",
                token_hash="h" * 64,
                created_at=NOW,
                user_id=account.id,
                patient_id=patient_id,
            )
        )
        for job, included in (("e1", [patient_id, other.patient_id]), ("e2", [other.patient_id])):
            await conn.execute(
                export_jobs.insert().values(
                    id=job,
                    token_id="t0",
                    request="/Group/g/$export",
                    kind="group",
                    patient_ids=json.dumps(included),
                    types="[]",
                    status="complete",
                    created_at=NOW,
                    expires_at=NOW,
                )
            )
        await conn.execute(
            audit_log.insert().values(
                seq=1,
                id="a1",
                recorded=NOW,
                action="R",
                subtype="read",
                outcome="0",
                actor_kind="user",
                actor_id="dr",
                actor_name="Dr",
                patient_id=patient_id,
                prev_hash="0" * 64,
                hash="1" * 64,
            )
        )
        # Another identifier of hers (HL7 PID-3), sealed with her key.
        await Patients(conn).add_identifiers(patient_id, [("SSA", "991-22-3333")])
        await Patients(conn).add_identifiers(other.patient_id, [("SSA", "991-22-4444")])
        await DeadLetters(conn).add_many(
            [
                DeadLetter(
                    START + timedelta(days=1),
                    "http",
                    keyed_world.device_id,
                    "m",
                    "malformed",
                    "bad",
                    "{}",
                ),
                DeadLetter(
                    START + timedelta(days=1),
                    "http",
                    other.device_id,
                    "m",
                    "malformed",
                    "bad",
                    "{}",
                ),
            ]
        )

    document = await _erase(keyed, patient_id)

    deleted = document["rows_deleted"]
    assert isinstance(deleted, dict)
    assert {k: v for k, v in deleted.items() if v} == {
        "observations": 4,
        "observation_components": 2,
        "observation_rollups": 8,  # minute and hour: 3 + 1 of heart rate, 2 + 2 of pressure
        "consents": 1,
        "care_plans": 1,
        "care_team_members": 1,  # the world's clinician
        "api_tokens": 1,
        "users": 1,
        "device_assignments": 1,
        "export_jobs": 1,
        "dead_letters": 1,
        "patient_identifiers": 1,
        "patients": 1,
    }
    async with keyed.read() as conn:
        remaining_jobs = list((await conn.execute(select(export_jobs.c.id))).scalars())
        audit = (await conn.execute(select(func.count()).select_from(audit_log))).scalar_one()
        accounts = list(  # the patient's own account; clinicians' accounts stay
            (
                await conn.execute(select(users.c.id).where(users.c.patient_id == patient_id))
            ).scalars()
        )
        records = list((await conn.execute(select(patients.c.id))).scalars())
        others_ids = await Patients(conn).find_by_identifier("SSA", "991-22-4444")
        hers = await Patients(conn).find_by_identifier("SSA", "991-22-3333")
        the_other = await Observations(conn).search(ObservationQuery(patient_id=other.patient_id))
        stored = (await conn.execute(select(erasure_certificates.c.patient_id))).scalars().all()
    assert remaining_jobs == ["e2"]
    assert audit == 1  # the audit trail outlives erasure
    assert accounts == [] and records == [other.patient_id]
    assert hers is None and others_ids is not None and others_ids.id == other.patient_id
    assert [o.values[0].value for o in the_other] == [66.0]
    assert stored == [patient_id]
    with pytest.raises(DataKeyDestroyed):  # an erased patient gets no new key
        await keyed.cipher.key_or_create(patient_id)


async def test_erasure_waits_for_a_batch_storing_the_patients_readings_and_erases_it_too(
    keyed: Database, keyed_world: World, database_url: str, tmp_path: Path
) -> None:
    """A batch in another process holds the patient when erasure starts: erasure waits for its
    commit, then deletes its readings with the rest, and succeeds."""
    patient_id, device_id = keyed_world.patient_id, keyed_world.device_id
    other = keyed_database(database_url, tmp_path / "keys")  # another process, its own cache
    try:
        async with other.write() as conn:
            await Observations(conn).add_batch([heart_rate(patient_id, device_id, 10, 80)], START)
            erasing = asyncio.create_task(_erase(keyed, patient_id))
            await asyncio.sleep(0.5)
            assert not erasing.done()  # waiting for the batch's commit
        document = await asyncio.wait_for(erasing, 30)
    finally:
        await other.dispose()
    assert document["rows_deleted"]["observations"] == 5  # type: ignore[index]
    assert (await raw_rows(keyed, patient_id))["observations"] == []


async def test_a_process_holding_an_erased_patients_key_cannot_store_readings_for_them(
    keyed: Database, keyed_world: World, database_url: str, tmp_path: Path
) -> None:
    """Another process still has the patient's key in its cache after the erasure: the
    readings it is given for them are refused (the patient's row is gone), none is stored."""
    patient_id, device_id = keyed_world.patient_id, keyed_world.device_id
    other = keyed_database(database_url, tmp_path / "keys")
    try:
        await other.cipher.key(patient_id)  # cached
        await _erase(keyed, patient_id)
        batch = [heart_rate(patient_id, device_id, n, 80) for n in range(10, 40)]
        with pytest.raises((DataKeyDestroyed, IntegrityError)):  # SQLite: its foreign key
            await store(other, batch)
    finally:
        await other.dispose()
    assert (await raw_rows(keyed, patient_id))["observations"] == []


async def test_a_legal_hold_refuses_erasure_and_destroys_nothing(
    keyed: Database, keyed_world: World
) -> None:
    await set_legal_hold(keyed, keyed_world.patient_id, True)
    with pytest.raises(LegalHold, match="legal hold"):
        await _erase(keyed, keyed_world.patient_id)
    keyed.cipher.forget_cached()
    async with keyed.read() as conn:
        found = await Observations(conn).search(ObservationQuery(patient_id=keyed_world.patient_id))
    assert len(found) == 4
    await set_legal_hold(keyed, keyed_world.patient_id, False)
    await _erase(keyed, keyed_world.patient_id)


async def test_erasure_within_the_retention_period_is_refused(
    keyed: Database, keyed_world: World
) -> None:
    with pytest.raises(WithinRetention, match="30-day retention"):
        await erase_patient(
            keyed,
            keyed_world.patient_id,
            reason="r",
            requested_by="dpo",
            retention=timedelta(days=30),
            now=START + timedelta(days=10),
        )
    assert await keyed.cipher.keys.get(keyed_world.patient_id) is not None
    await erase_patient(
        keyed,
        keyed_world.patient_id,
        reason="r",
        requested_by="dpo",
        retention=timedelta(days=30),
        now=START + timedelta(days=31),
    )


async def test_the_certificate_verifies_and_a_modified_one_does_not(
    keyed: Database, keyed_world: World, tmp_path: Path
) -> None:
    certificate = await erase_patient(
        keyed, keyed_world.patient_id, reason="patient's request", requested_by="dpo"
    )
    public_key = keyed.cipher.provider.signing_public_key()
    text = certificate.to_json()
    assert verify_certificate(text, public_key)
    assert certificate.document["data_key_destroyed"].startswith("dk-")  # type: ignore[union-attr]
    forged = json.loads(text)
    forged["document"]["rows_deleted"]["observations"] = 0
    assert not verify_certificate(json.dumps(forged), public_key)
    another_platform = LocalKeyFile(tmp_path / "another-platform.json")
    assert not verify_certificate(text, another_platform.signing_public_key())


def test_the_cli_holds_erases_and_verifies_a_certificate(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDMESH_DATABASE_URL", database_url)
    monkeypatch.setenv("MEDMESH_MASTER_KEY_FILE", str(tmp_path / "keys" / "master-keys.json"))
    monkeypatch.setenv("MEDMESH_KEY_STORE_PATH", str(tmp_path / "keys" / "patient-keys.db"))
    runner = CliRunner()
    created = runner.invoke(
        app, ["patient", "create", "--family", "Okafor", "--given", "Ada", "--identifier", "M-1"]
    )
    assert created.exit_code == 0, created.output
    patient_id = created.output.strip().split()[-1]
    erase = ["patient", "erase", patient_id, "--reason", "request", "--requested-by", "dpo"]

    assert runner.invoke(app, ["patient", "hold", patient_id, "--on"]).exit_code == 0
    refused = runner.invoke(app, erase)
    assert refused.exit_code == 1 and "legal hold" in refused.output
    assert runner.invoke(app, ["patient", "hold", patient_id, "--off"]).exit_code == 0
    erased = runner.invoke(app, erase)
    assert erased.exit_code == 0, erased.output
    certificate = tmp_path / "certificate.json"
    certificate.write_text(erased.output)
    verified = runner.invoke(app, ["patient", "verify-certificate", str(certificate)])
    assert verified.exit_code == 0 and "valid" in verified.output
    certificate.write_text(erased.output.replace('"dpo"', '"someone else"'))
    forged = runner.invoke(app, ["patient", "verify-certificate", str(certificate)])
    assert forged.exit_code == 1 and "INVALID" in forged.output
    again = runner.invoke(app, erase)
    assert again.exit_code == 1 and "not found" in again.output.lower()


async def test_webhook_deliveries_about_the_patient_are_deleted_and_their_copies_unreadable(
    keyed: Database, keyed_world: World
) -> None:
    other = await make_world(keyed, identifier="MRN-2")
    now = datetime.now(UTC)
    async with keyed.write() as conn:
        await conn.execute(
            subscriptions.insert().values(
                id="sub-1",
                criteria="Flag",
                endpoint="https://receiver.example",
                signing_secret="s",
                status="active",
                resource="{}",
                created_at=now,
                created_by="test",
            )
        )
        deliveries = WebhookDeliveries(conn)
        for world in (keyed_world, other):
            event = Event(ALERT, world.patient_id, {"detail": "Blood pressure 213/127 mmHg"})
            await deliveries.enqueue(["sub-1"], event.id, event.to_json(), now, world.patient_id)
    async with keyed.read() as conn:
        before = await WebhookDeliveries(conn).for_subscription("sub-1")
    [copied] = [d for d in before if d.patient_id == keyed_world.patient_id]

    await _erase(keyed, keyed_world.patient_id)

    async with keyed.read() as conn:
        after = await WebhookDeliveries(conn).for_subscription("sub-1")
        assert [d.patient_id for d in after] == [other.patient_id]
        assert b"213/127" in await WebhookDeliveries(conn).event_of(after[0])
        with pytest.raises(DataKeyDestroyed):  # a backup's copy of the row opens no more
            await WebhookDeliveries(conn).event_of(copied)
