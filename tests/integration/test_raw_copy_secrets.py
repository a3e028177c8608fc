"""What a stolen copy of the database still shows (docs/encryption.md#what-a-copy-shows): after a
clinician enrols TOTP and a webhook is delivered for an alert that quotes a value, the raw bytes
of the main database (SQLite's files, PostgreSQL's `pg_dump`) hold neither the second factor
nor the value. The key store, kept apart, is not part of the copy."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from medmesh.access.identity import totp
from medmesh.access.identity.accounts import SignIn
from medmesh.access.identity.lockout import LockoutPolicy
from medmesh.store.database import Database
from medmesh.store.schema import webhook_deliveries
from medmesh.store.webhook_deliveries import DELIVERED, WebhookDeliveries
from tests.conftest import World
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
