"""What a stolen copy of the database still shows (docs/encryption.md#what-a-copy-shows): after a
clinician enrols TOTP and a webhook is delivered for an alert that quotes a value, the raw bytes
of the main database (SQLite's files, PostgreSQL's `pg_dump`) hold neither the second factor
nor the value. The key store, kept apart, is not part of the copy."""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from medmesh.access.identity import totp
from medmesh.access.identity.accounts import SignIn
from medmesh.access.identity.lockout import LockoutPolicy
from medmesh.crypto.local import default_key_paths
from medmesh.store import migrate
from medmesh.store.database import Database
from medmesh.store.schema import webhook_deliveries
from medmesh.store.users import Users
from medmesh.store.webhook_deliveries import DELIVERED, WebhookDeliveries
from tests.conftest import (
    BACKENDS,
    POSTGRES_URL,
    World,
    _create_pg_database,
    _drop_pg_database,
)
from tests.helpers import reading
from tests.integration.test_webhooks import (  # noqa: F401  (`platform` is a fixture)
    StartReceiver,
    _subscribe,
    platform,
)
from tests.webhook_receiver import Certificates

QUOTED = b"213/127"  # the blood pressure the alert's detail quotes


def raw_copy(database_url: str) -> bytes:
    """Every byte a thief copying the main database gets: SQLite's file and its WAL, or a full
    `pg_dump` of the PostgreSQL database."""
    url = make_url(database_url)
    if url.drivername.startswith("sqlite"):
        main = Path(str(url.database))
        wal = main.with_name(main.name + "-wal")
        return main.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    dump = subprocess.run(["pg_dump", "--no-owner", plain], check=True, capture_output=True)
    return dump.stdout


def forms(needle: bytes) -> list[bytes]:
    """The needle as it may sit in a copy: raw, or hex as pg_dump writes bytea."""
    return [needle, needle.hex().encode()]


async def test_a_raw_copy_of_the_database_holds_no_totp_secret_and_no_alert_value(
    database_url: str,
    world: World,
    platform: tuple[httpx.AsyncClient, FastAPI],  # noqa: F811
    start_receiver: StartReceiver,
    webhook_certificates: Certificates,
) -> None:
    http, app = platform
    database: Database = app.state.services.database
    accounts = SignIn(database, LockoutPolicy())
    now = datetime.now(UTC)
    enrolment = await accounts.enrolment(world.clinician_id, now=now)
    await accounts.confirm_enrolment(
        world.clinician_id, totp.code_at(enrolment.secret, now), address="127.0.0.1", now=now
    )
    later = now + timedelta(seconds=60)
    signed_in = await accounts.code(
        world.clinician_id,
        totp.code_at(enrolment.secret, later),
        address="127.0.0.1",
        now=later,
    )
    assert signed_in.user_id == world.clinician_id  # the sealed secret still signs people in

    receiver = start_receiver(webhook_certificates.trusted)
    subscription_id, _ = await _subscribe(
        http, world, f"Flag?patient={world.patient_id}", receiver.url
    )
    value = {"systolic": 213, "diastolic": 127}
    response = await http.post(
        "/ingest/v1/readings",
        json={"readings": [reading("bp-crisis-1", "blood-pressure", value, "mm[Hg]")]},
        headers=world.device_headers,
    )
    assert response.status_code == 202, response.text
    await receiver.wait_for(1)
    for _ in range(200):  # the delivery is recorded just after the receiver answers
        async with database.read() as conn:
            delivered = await conn.scalar(
                select(func.count())
                .select_from(webhook_deliveries)
                .where(webhook_deliveries.c.status == DELIVERED)
            )
        if delivered:
            break
        await asyncio.sleep(0.05)
    assert delivered == 1
    async with database.read() as conn:
        (delivery,) = await WebhookDeliveries(conn).for_subscription(subscription_id)
        event = await WebhookDeliveries(conn).event_of(delivery)
    assert QUOTED in event  # the notified event does quote the value: sealed, not absent

    copy = await asyncio.to_thread(raw_copy, database_url)
    assert b"dr-test-mrn-1" in copy  # the copy does hold the tables: this would find a secret
    secret = enrolment.secret
    for needle in [secret.encode(), base64.b32decode(secret), QUOTED]:
        for form in forms(needle):
            assert form not in copy


@pytest.fixture(params=BACKENDS)
def unmigrated_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each backend, not migrated yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    request.getfixturevalue("postgres_url")  # skips (or fails in CI) without PostgreSQL
    name = f"medmesh_test_{uuid.uuid4().hex[:12]}"
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(False)
    asyncio.run(_create_pg_database(name))
    try:
        yield url
    finally:
        asyncio.run(_drop_pg_database(name))
        shutil.rmtree(default_key_paths(url)[0].parent, ignore_errors=True)


async def test_the_migration_seals_secrets_and_payloads_stored_before_it(
    unmigrated_url: str,
) -> None:
    database = Database(unmigrated_url)
    try:
        await migrate.upgrade(database, "0021")
        user_id, patient_id = str(uuid.uuid4()), str(uuid.uuid4())
        secret = totp.new_secret()
        payload = orjson.dumps(
            {
                "id": "ev-1",
                "kind": "alert",
                "patient_id": patient_id,
                "at": datetime.now(UTC).isoformat(),
                "data": {"detail": "Blood pressure 213/127 mmHg"},
            }
        )
        async with database.write() as conn:  # rows as medmesh stored them before 0025
            await conn.execute(
                text(
                    "INSERT INTO users (id, organization_id, username, display_name, role, "
                    "password_hash, totp_secret, totp_last_step, created_at) VALUES "
                    "(:id, 'default', 'dr-old', 'Dr Old', 'clinician', 'x', :s, 0, :now)"
                ),
                {"id": user_id, "s": secret, "now": datetime.now(UTC)},
            )
            await conn.execute(
                text(
                    "INSERT INTO subscriptions (id, criteria, endpoint, signing_secret, status, "
                    "resource, created_at, created_by) VALUES "
                    "('sub-1', 'Flag', 'https://x', 's', 'active', '{}', :now, 'test')"
                ),
                {"now": datetime.now(UTC)},
            )
            await conn.execute(
                text(
                    "INSERT INTO webhook_deliveries (subscription_id, event_id, payload, status, "
                    "attempts, next_attempt_at, created_at) VALUES "
                    "('sub-1', 'ev-1', :p, 'pending', 0, :now, :now)"
                ),
                {"p": payload, "now": datetime.now(UTC)},
            )
        await migrate.upgrade(database)
        async with database.read() as conn:
            record = await Users(conn).get(user_id)
            (delivery,) = await WebhookDeliveries(conn).for_subscription("sub-1")
            event = await WebhookDeliveries(conn).event_of(delivery)
        assert record is not None and record.totp_secret == secret
        assert delivery.patient_id == patient_id and event == payload
        await database.dispose()
        copy = await asyncio.to_thread(raw_copy, unmigrated_url)
        for needle in [secret.encode(), base64.b32decode(secret), QUOTED]:
            for form in forms(needle):
                assert form not in copy
    finally:
        await database.dispose()
