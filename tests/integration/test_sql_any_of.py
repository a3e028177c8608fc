"""`any_of` (store/_sql.py): a list lookup that is one SQL text whatever the list's length on
PostgreSQL (so asyncpg prepares it once a connection), and finds the same rows on both
backends."""

from __future__ import annotations

from sqlalchemy import event, select

from medmesh import provisioning
from medmesh.store._sql import any_of
from medmesh.store.database import Database
from medmesh.store.schema import patients
from tests.conftest import World

_FOUND = select(patients.c.id).where(any_of(patients.c.id, "ids")).order_by(patients.c.id)


async def _found(database: Database, ids: list[str]) -> list[str]:
    async with database.read() as conn:
        return list((await conn.execute(_FOUND, {"ids": ids})).scalars())


async def test_a_list_finds_exactly_its_rows_whatever_its_length(
    database: Database, world: World
) -> None:
    other = await provisioning.create_patient(database, family="Roe", given="R", identifier="MRN-2")
    both = sorted([world.patient_id, other.id])

    assert await _found(database, [world.patient_id]) == [world.patient_id]
    assert await _found(database, [other.id, world.patient_id, "no-such"]) == both
    assert await _found(database, []) == []
    # Longer than the column (36): not cut down to a stored id's length.
    assert await _found(database, [world.patient_id + "-and-more"]) == []


async def test_postgresql_is_sent_one_text_for_every_length_of_list(database: Database) -> None:
    sent: list[str] = []

    def record(*args: object) -> None:
        sent.append(str(args[2]))  # (conn, cursor, statement, parameters, context, many)

    async with database.read() as conn:
        event.listen(conn.sync_connection, "before_cursor_execute", record)
        for length in (1, 2, 7):
            await conn.execute(_FOUND, {"ids": [f"id-{n}" for n in range(length)]})
    assert len(sent) == 3
    if database.backend == "postgresql":
        assert len(set(sent)) == 1  # prepared once a connection
        assert "= ANY" in sent[0]
    else:  # SQLite prepares nothing across calls: an expanding IN, a text a length
        assert len(set(sent)) == 3
