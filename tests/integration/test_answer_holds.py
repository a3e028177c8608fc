"""The Observation search writes its audit record while it searches (http/answer_holds.py):
its answer still leaves only once the record is durable, and not at all when it cannot be
written. On both backends, through the real app; the audit log is made to refuse writes by a
trigger in the database itself."""

from __future__ import annotations

import httpx
from sqlalchemy import select, text

from medmesh.store.database import Database
from medmesh.store.schema import audit_log
from tests.conftest import World
from tests.helpers import reading

INGEST = "/ingest/v1/readings"


async def _refuse_audit_writes(database: Database) -> None:
    async with database.write() as conn:
        if database.backend == "postgresql":
            await conn.execute(
                text(
                    "CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'audit log unavailable'; END $$ LANGUAGE plpgsql"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_audit()"
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log "
                    "BEGIN SELECT RAISE(ABORT, 'audit log unavailable'); END"
                )
            )


async def _allow_audit_writes(database: Database) -> None:
    async with database.write() as conn:
        await conn.execute(
            text(
                "DROP TRIGGER refuse_audit ON audit_log"
                if database.backend == "postgresql"
                else "DROP TRIGGER refuse_audit"
            )
        )
        if database.backend == "postgresql":
            await conn.execute(text("DROP FUNCTION refuse_audit()"))


async def _search(client: httpx.AsyncClient, world: World) -> httpx.Response:
    return await client.get(
        "/fhir/Observation", params={"patient": world.patient_id}, headers=world.reader_headers
    )


async def _searches_recorded(database: Database, world: World) -> int:
    async with database.read() as conn:
        subtypes = await conn.execute(
            select(audit_log.c.subtype).where(audit_log.c.patient_id == world.patient_id)
        )
        return list(subtypes.scalars()).count("search")


async def test_a_search_is_answered_only_once_its_audit_record_is_durable(
    client: httpx.AsyncClient, database: Database, world: World
) -> None:
    posted = await client.post(
        INGEST, json={"readings": [reading("held-1")]}, headers=world.device_headers
    )
    assert posted.status_code == 202
    for searched in range(1, 6):
        response = await _search(client, world)
        assert response.status_code == 200
        assert len(response.json()["entry"]) == 1
        # Read as soon as the answer arrived: its record is in the log already.
        assert await _searches_recorded(database, world) == searched


async def test_a_search_whose_audit_record_cannot_be_written_is_not_answered(
    client: httpx.AsyncClient, database: Database, world: World
) -> None:
    posted = await client.post(
        INGEST, json={"readings": [reading("held-2", value=131)]}, headers=world.device_headers
    )
    assert posted.status_code == 202
    assert (await _search(client, world)).status_code == 200
    await _refuse_audit_writes(database)
    try:
        response = await _search(client, world)
    finally:
        await _allow_audit_writes(database)
    assert response.status_code == 500
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "Observation" not in response.text and "131" not in response.text


async def test_a_refused_search_is_recorded_before_it_is_refused(
    client: httpx.AsyncClient, database: Database, world: World
) -> None:
    """A refusal is not held: its record is written first, as for every other route."""
    stranger = await client.get(
        "/fhir/Observation",
        params={"patient": "00000000-0000-4000-8000-000000000000"},
        headers=world.reader_headers,
    )
    assert stranger.status_code == 403
    async with database.read() as conn:
        outcomes = await conn.execute(
            select(audit_log.c.outcome).where(
                audit_log.c.patient_id == "00000000-0000-4000-8000-000000000000"
            )
        )
        assert list(outcomes.scalars()) == ["4"]
