"""Statements that are one SQL text on PostgreSQL whatever the number of values they carry, so
asyncpg prepares each once a connection (store/_sql.py): `any_of`, a list lookup,
`insert_or_lock`, rows made or locked, and `insert_rows`, `update_rows` and `delete_rows`;
each does the same on both backends."""

from __future__ import annotations

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh import provisioning
from medmesh.store._sql import any_of, delete_rows, insert_or_lock, insert_rows, update_rows
from medmesh.store.database import Database
from medmesh.store.schema import observation_rollups, patients
from tests.conftest import World

_FOUND = select(patients.c.id).where(any_of(patients.c.id, "ids")).order_by(patients.c.id)


def _texts_sent(conn: AsyncConnection) -> list[str]:
    """The SQL texts `conn` sends from now on, one a statement."""
    sent: list[str] = []

    def record(*args: object) -> None:
        sent.append(str(args[2]))  # (conn, cursor, statement, parameters, context, many)

    event.listen(conn.sync_connection, "before_cursor_execute", record)
    return sent


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
    async with database.read() as conn:
        sent = _texts_sent(conn)
        for length in (1, 2, 7):
            await conn.execute(_FOUND, {"ids": [f"id-{n}" for n in range(length)]})
    assert len(sent) == 3
    if database.backend == "postgresql":
        assert len(set(sent)) == 1  # prepared once a connection
        assert "= ANY" in sent[0]
    else:  # SQLite prepares nothing across calls: an expanding IN, a text a length
        assert len(set(sent)) == 3


def _bucket(patient_id: str, minute: int, stats: bytes) -> dict[str, object]:
    return {
        "patient_id": patient_id,
        "code": "8867-4",
        "component": "",
        "resolution": 60,
        "bucket": minute,
        "stats": stats,
    }


async def test_rows_are_made_or_locked_and_come_back_as_stored_in_one_text(
    database: Database, world: World
) -> None:
    key = ("patient_id", "code", "component", "resolution", "bucket")

    patient = world.patient_id
    async with database.write() as conn:
        sent = _texts_sent(conn)
        first = await insert_or_lock(
            conn, observation_rollups, key, "stats", [_bucket(patient, 2, b"two")]
        )
        again = await insert_or_lock(
            conn,
            observation_rollups,
            key,
            "stats",
            [_bucket(patient, m, b"new") for m in (1, 2, 3)],
        )

    assert [(r.bucket, r.stats) for r in first] == [(2, b"two")]
    # In the order given; the stored bucket comes back as stored, not overwritten.
    assert [(r.bucket, r.stats) for r in again] == [(1, b"new"), (2, b"two"), (3, b"new")]
    if database.backend == "postgresql":
        assert len(sent) == 2 and sent[0] == sent[1]
        assert "unnest" in sent[0]


async def _stored_buckets(database: Database) -> list[tuple[str, int, bytes]]:
    table = observation_rollups
    query = select(table.c.patient_id, table.c.bucket, table.c.stats).order_by(
        table.c.patient_id, table.c.bucket
    )
    async with database.read() as conn:
        return [tuple(row) for row in await conn.execute(query)]  # type: ignore[misc]


async def test_rows_are_updated_by_their_key_and_no_other_in_one_text(
    database: Database, world: World
) -> None:
    key = ("patient_id", "code", "component", "resolution", "bucket")
    other = await provisioning.create_patient(database, family="Roe", given="R", identifier="MRN-2")
    mine, theirs = world.patient_id, other.id

    async with database.write() as conn:
        await insert_or_lock(
            conn,
            observation_rollups,
            key,
            "stats",
            [_bucket(p, m, b"old") for p in (mine, theirs) for m in (1, 2, 3)],
        )
    async with database.write() as conn:
        sent = _texts_sent(conn)
        await update_rows(conn, observation_rollups, key, [_bucket(mine, 2, b"two")])
        await update_rows(
            conn,
            observation_rollups,
            key,
            [_bucket(theirs, 3, b"three"), _bucket(mine, 1, b"one"), _bucket(mine, 9, b"none")],
        )
        await update_rows(conn, observation_rollups, key, [])

    # Each row changed only the bucket of its own key; a key not stored makes no row.
    assert sorted(await _stored_buckets(database)) == sorted(
        [
            (mine, 1, b"one"),
            (mine, 2, b"two"),
            (mine, 3, b"old"),
            (theirs, 1, b"old"),
            (theirs, 2, b"old"),
            (theirs, 3, b"three"),
        ]
    )
    if database.backend == "postgresql":
        assert len(sent) == 2 and sent[0] == sent[1]  # one text for 1 and 3 rows
        assert "unnest" in sent[0]


async def test_rows_are_inserted_and_deleted_by_their_columns_in_one_text_each(
    database: Database, world: World
) -> None:
    other = await provisioning.create_patient(database, family="Roe", given="R", identifier="MRN-2")
    mine, theirs = world.patient_id, other.id

    async with database.write() as conn:
        sent = _texts_sent(conn)
        await insert_rows(conn, observation_rollups, [_bucket(mine, 1, b"one")])
        await insert_rows(
            conn,
            observation_rollups,
            [_bucket(p, m, b"more") for p in (mine, theirs) for m in (2, 3)],
        )
        await insert_rows(conn, observation_rollups, [])
        # Each row given deletes the rows equal to it in those columns, and no other.
        await delete_rows(conn, observation_rollups, [{"patient_id": mine, "bucket": 3}])
        await delete_rows(
            conn,
            observation_rollups,
            [
                {"patient_id": theirs, "bucket": 2},
                {"patient_id": mine, "bucket": 1},
                {"patient_id": theirs, "bucket": 9},
            ],
        )
        await delete_rows(conn, observation_rollups, [])

    assert sorted(await _stored_buckets(database)) == sorted(
        [(mine, 2, b"more"), (theirs, 3, b"more")]
    )
    if database.backend == "postgresql":
        assert len(sent) == 4
        assert sent[0] == sent[1] and sent[2] == sent[3]  # one text each for 1 and 3 rows
        assert all("unnest" in text for text in sent)
