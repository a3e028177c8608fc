"""What one SQL statement costs medmesh's process in CPU, by how it is made: a SQLAlchemy Core
statement built at every call (as most of medmesh's queries are), the same statement built
once with bound parameters (as the hot paths' are, store/_sql.py), an `IN` list either way, a
three-row insert as a multi-row VALUES built per call or as executemany of a statement built
once; beside the limit, asyncpg's own `fetch` of the same SQL on the same connection.

CPU time of this process only (PostgreSQL's work is in its own process), so the figures are
the client-side cost a statement adds to a request, whatever the machine's load.

Run: `.venv/bin/python benchmarks/statement_cost.py` (`--statements N`, default 3000;
`--quick` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from _common import (
    DEFAULT_POSTGRES_URL,
    PostgresUnreachable,
    log,
    print_machine,
    scratch_postgres,
)

_metadata = MetaData()
_table = Table(
    "statement_cost", _metadata, Column("id", Integer, primary_key=True), Column("name", String)
)
_BY_ID = select(_table).where(_table.c.id == bindparam("id"))
_BY_IDS = select(_table).where(_table.c.id.in_(bindparam("ids", expanding=True)))
_INSERT = postgresql.insert(_table).on_conflict_do_nothing()


def _rows(n: int) -> list[dict[str, Any]]:
    return [{"id": 1_000 + 3 * n + k, "name": "x"} for k in range(3)]


def _ways(conn: AsyncConnection) -> dict[str, Callable[[int], Awaitable[Any]]]:
    def by_id_built(n: int) -> Awaitable[Any]:
        return conn.execute(select(_table).where(_table.c.id == n % 100))

    def by_ids_built(n: int) -> Awaitable[Any]:
        return conn.execute(select(_table).where(_table.c.id.in_([n % 100, n % 100 + 1])))

    def values_built(n: int) -> Awaitable[Any]:
        return conn.execute(postgresql.insert(_table).values(_rows(n)).on_conflict_do_nothing())

    return {
        "select by id, built each call": by_id_built,
        "select by id, built once": lambda n: conn.execute(_BY_ID, {"id": n % 100}),
        "select IN (2 ids), built each call": by_ids_built,
        "select IN (2 ids), built once (expanding)": lambda n: conn.execute(
            _BY_IDS, {"ids": [n % 100, n % 100 + 1]}
        ),
        "insert 3 rows, multi-row VALUES built each call": values_built,
        "insert 3 rows, executemany of one built once": lambda n: conn.execute(_INSERT, _rows(n)),
    }


async def _cpu_per_call(run: Callable[[int], Awaitable[Any]], count: int, offset: int) -> float:
    for n in range(200):  # warm: compiled forms cached, statements prepared
        await run(offset + n)
    started = time.process_time()
    for n in range(count):
        result = await run(offset + 200 + n)
        if getattr(result, "returns_rows", False):
            result.all()
    return (time.process_time() - started) / count * 1e6


async def run(url: str, count: int) -> None:
    async with scratch_postgres(url) as scratch:
        engine = create_async_engine(scratch.replace("postgresql://", "postgresql+asyncpg://"))
        try:
            async with engine.begin() as conn:
                await conn.run_sync(_metadata.create_all)
                await conn.execute(_INSERT, [{"id": i, "name": f"n{i}"} for i in range(100)])
            async with engine.connect() as conn:
                raw = (await conn.get_raw_connection()).driver_connection
                assert raw is not None
                limit = await _cpu_per_call(
                    lambda n: raw.fetch(
                        "SELECT id, name FROM statement_cost WHERE id = $1", n % 100
                    ),
                    count,
                    0,
                )
                log(f"{'limit: asyncpg fetch, same SQL':<50} {limit:6.0f} µs CPU a statement")
                for index, (label, way) in enumerate(_ways(conn).items()):
                    cost = await _cpu_per_call(way, count, 100_000 * (index + 1))
                    ratio = cost / limit
                    log(f"{label:<50} {cost:6.0f} µs CPU a statement  ({ratio:.1f}× the limit)")
                await conn.rollback()
        finally:
            await engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres-url", default=os.environ.get("MEDMESH_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    )
    parser.add_argument("--statements", type=int, default=3000, help="timed, for each way")
    parser.add_argument("--quick", action="store_true", help="few statements, for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.statements = 200
    asyncio.run(print_machine(postgres_url=args.postgres_url))
    try:
        asyncio.run(run(args.postgres_url, args.statements))
    except PostgresUnreachable as exc:
        log(f"skipped: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
