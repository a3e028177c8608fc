"""Shared fixtures: the store on both backends, the app in-process, and a live server.

PostgreSQL tests connect to MEDMESH_TEST_POSTGRES_URL (default: the local server, user
postgres). Where it is not reachable they skip with the reason, except in CI (CI set),
where they fail: CI must exercise the real PostgreSQL backend.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from medmesh import provisioning
from medmesh.access.identity.passwords import hash_password, rules_for
from medmesh.access.identity.principals import DEFAULT_ORGANIZATION, Role
from medmesh.app import create_app
from medmesh.config import Settings
from medmesh.crypto.local import default_key_paths
from medmesh.store import migrate
from medmesh.store.database import Database
from medmesh.store.schema import metadata
from medmesh.store.users import Users

POSTGRES_URL = os.environ.get(
    "MEDMESH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
IN_CI = bool(os.environ.get("CI"))
BACKENDS = ["sqlite", "postgresql"]


def _admin_dsn() -> str:
    return make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(False)


async def _create_pg_database(name: str) -> None:
    conn = await asyncpg.connect(_admin_dsn(), timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(_admin_dsn(), timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session."""
    name = f"medmesh_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_create_pg_database(name))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL is not reachable at {POSTGRES_URL} ({type(exc).__name__})"
        if IN_CI:
            pytest.fail(f"{message}; CI requires it (see .ci/run)")
        pytest.skip(message)
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(False)

    async def prepare() -> None:
        database = Database(url)
        await migrate.upgrade(database)
        await database.dispose()

    asyncio.run(prepare())
    yield url
    asyncio.run(_drop_pg_database(name))
    # The test database's default key directory goes with it (docs/encryption.md).
    shutil.rmtree(default_key_paths(url)[0].parent, ignore_errors=True)


async def _truncate(database: Database) -> None:
    # The deployment's first organisation is made by a migration, like in production.
    tables = ", ".join(t.name for t in metadata.sorted_tables if t.name != "organizations")
    async with database.write() as conn:
        await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        await conn.execute(text("DELETE FROM organizations WHERE id <> 'default'"))


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database URL on each backend in turn."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'medmesh.db'}"

        async def prepare() -> None:
            database = Database(url)
            await migrate.upgrade(database)
            await database.dispose()

        asyncio.run(prepare())
        return url
    url = str(request.getfixturevalue("postgres_url"))

    async def empty() -> None:
        database = Database(url)
        await _truncate(database)
        await database.dispose()

    asyncio.run(empty())
    return url


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    yield db
    await db.dispose()


@dataclass(frozen=True, slots=True)
class World:
    """A patient with an assigned device and a clinician token."""

    patient_id: str
    device_id: str
    device_secret: str
    token: str  # a clinician on the patient's care team, scope user/*.cruds
    clinician_id: str

    @property
    def device_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.device_secret}"}

    @property
    def reader_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


ASSIGNED_SINCE = datetime(2020, 1, 1, tzinfo=UTC)
CLINICIAN_PASSWORD = "correct horse battery staple"


async def make_world(database: Database, identifier: str = "MRN-1") -> World:
    patient = await provisioning.create_patient(
        database, family="Doe", given="Jane", identifier=identifier, gender="female"
    )
    credential = await provisioning.register_device(database, display_name="Cuff", model="BP-1")
    await provisioning.assign_device(database, credential.device_id, patient.id, ASSIGNED_SINCE)
    # The clinician's account as `provisioning.create_user` makes it, with the password's
    # argon2id hash made once a session: hashing takes a quarter of a second and a core, and
    # most tests make a world (tests/unit/test_accounts*.py and the sign-in tests go through
    # create_user itself).
    clinician_id = str(uuid.uuid4())
    async with database.write() as conn:
        await Users(conn).add(
            user_id=clinician_id,
            organization_id=DEFAULT_ORGANIZATION,
            username=f"dr-test-{identifier.lower()}",
            display_name="dr test",
            role=Role.CLINICIAN.value,
            password_hash=_clinician_password_hash(),
        )
    await provisioning.add_to_care_team(database, patient.id, clinician_id, added_by="test")
    token = await provisioning.issue_user_token(
        database, user_id=clinician_id, scopes="user/*.cruds"
    )
    return World(patient.id, credential.device_id, credential.secret, token, clinician_id)


@functools.cache
def _clinician_password_hash() -> str:
    return hash_password(CLINICIAN_PASSWORD, username="dr-test", rules=rules_for(Role.CLINICIAN))


@pytest.fixture
async def world(database: Database) -> World:
    return await make_world(database)


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The real app, in-process, with its lifespan run."""
    app = create_app(Settings(database_url=database_url, auto_migrate=False))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http,
    ):
        yield http


from tests.mosquitto_broker import (  # noqa: E402  (fixtures shared by the MQTT tests)
    broker_certificates,
    broker_dir,
    start_broker,
)
from tests.webhook_receiver import (  # noqa: E402  (fixtures shared by the webhook tests)
    start_receiver,
    webhook_certificates,
)

__all__ = [
    "broker_certificates",
    "broker_dir",
    "start_broker",
    "start_receiver",
    "webhook_certificates",
]
