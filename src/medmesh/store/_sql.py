"""Backend-specific SQL pieces behind one call, each statement built once a backend.

Building a SQLAlchemy statement, and the cache key SQLAlchemy makes of it at every execution,
costs more CPU than executing it (about 0.2 ms of the 0.45 ms a statement costs on the
benchmark machine, docs/benchmarks.md "Statements built once"). So the statements the hot
paths run are built once, with bound parameters, and executed with their values; a statement
object executed again keeps its cache key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Boolean,
    Row,
    Select,
    String,
    Table,
    any_,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

_built: dict[tuple[object, ...], Any] = {}


def _dialect(conn: AsyncConnection) -> Any:
    return postgresql if conn.dialect.name == "postgresql" else sqlite


def insert_ignoring_duplicates(conn: AsyncConnection, table: Table) -> Any:
    """INSERT … ON CONFLICT DO NOTHING for the connection's backend, without values: execute
    it with the rows as parameters."""
    key = ("ignore", conn.dialect.name, table)
    if key not in _built:
        _built[key] = _dialect(conn).insert(table).on_conflict_do_nothing()
    return _built[key]


def upsert(
    conn: AsyncConnection, table: Table, key: tuple[str, ...], update: tuple[str, ...]
) -> Any:
    """INSERT … ON CONFLICT (key) DO UPDATE SET the `update` columns from the new row, without
    values: execute it with a row, or with a list of rows (each upserted in the order given;
    no two with the same key)."""
    cache_key = ("upsert", conn.dialect.name, table, key, update)
    if cache_key not in _built:
        statement = _dialect(conn).insert(table)
        _built[cache_key] = statement.on_conflict_do_update(
            index_elements=list(key), set_={c: statement.excluded[c] for c in update}
        )
    return _built[cache_key]


async def insert_or_lock(
    conn: AsyncConnection,
    table: Table,
    key: tuple[str, ...],
    touch: str,
    rows: Sequence[Mapping[str, Any]],
) -> Sequence[Row[Any]]:
    """INSERT … ON CONFLICT (key) DO UPDATE SET `touch` to itself, RETURNING every column: each
    row comes back as stored, an existing one locked as `SELECT … FOR UPDATE` would lock it
    (the update that changes nothing still takes the row's lock), a new one as inserted. Rows
    are taken in the order given; each has the same columns, and no two the same key. On
    PostgreSQL the rows go as arrays (`unnested`), one statement text whatever their number."""
    if not rows:
        return []
    columns = tuple(rows[0])
    cache_key = ("lock", conn.dialect.name, table, key, touch, columns)
    if cache_key not in _built:
        statement = _dialect(conn).insert(table)
        if conn.dialect.name == "postgresql":
            statement = statement.from_select(columns, unnested(table, columns))
        _built[cache_key] = statement.on_conflict_do_update(
            index_elements=list(key), set_={touch: table.c[touch]}
        ).returning(*table.c)
    if conn.dialect.name == "postgresql":
        result = await conn.execute(_built[cache_key], as_arrays(rows, columns))
    else:
        result = await conn.execute(_built[cache_key], list(rows))
    return result.all()


async def update_rows(
    conn: AsyncConnection, table: Table, key: tuple[str, ...], rows: Sequence[Mapping[str, Any]]
) -> None:
    """UPDATE each row found by its `key` columns to the row's other columns. Rows have the
    same columns, and no two the same key. On PostgreSQL one statement for all of them,
    `UPDATE … FROM unnest(…)`, one array a column: an executemany would have SQLAlchemy build
    every row's parameters in Python (a tenth of the server's CPU when a batch of readings
    touches a thousand rollup buckets, docs/benchmarks.md)."""
    await _each_row(
        conn,
        ("update", key),
        table,
        rows,
        lambda given: (
            update(table)
            .where(*(table.c[k] == given[k] for k in key))
            .values({c: v for c, v in given.items() if c not in key})
        ),
    )


async def insert_rows(
    conn: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    """INSERT the rows (each with the same columns). On PostgreSQL one statement, `INSERT …
    SELECT … FROM unnest(…)`, instead of an executemany (`update_rows` says why)."""
    await _each_row(
        conn,
        ("insert",),
        table,
        rows,
        lambda given: (
            insert(table).from_select(list(given), select(*given.values()))
            if conn.dialect.name == "postgresql"
            else insert(table).values(given)
        ),
    )


async def delete_rows(
    conn: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    """DELETE every row whose columns equal one of `rows` (each with the same columns). On
    PostgreSQL one statement, `DELETE … USING unnest(…)` (`update_rows` says why)."""
    await _each_row(
        conn,
        ("delete",),
        table,
        rows,
        lambda given: delete(table).where(*(table.c[c] == v for c, v in given.items())),
    )


async def _each_row(
    conn: AsyncConnection,
    kind: tuple[object, ...],
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    build: Callable[[dict[str, Any]], Any],
) -> None:
    """Execute the statement `build` makes of the rows' columns as given (`_given` on
    PostgreSQL, `_bound` elsewhere), built once, for every row."""
    if not rows:
        return
    columns = tuple(rows[0])
    postgres = conn.dialect.name == "postgresql"
    cache_key = (*kind, conn.dialect.name, table, columns)
    if cache_key not in _built:
        _built[cache_key] = build(_given(table, columns) if postgres else _bound(table, columns))
    if postgres:
        await conn.execute(_built[cache_key], as_arrays(rows, columns, prefix="a_"))
    else:
        await conn.execute(_built[cache_key], [{f"a_{c}": row[c] for c in columns} for row in rows])


def _given(table: Table, columns: Sequence[str]) -> dict[str, Any]:
    """PostgreSQL: the columns of rows bound as one array a column (`a_<column>`), unnested."""
    given = _unnest(table, columns, prefix="a_", name="given")
    return {c: given.c[c] for c in columns}


def _bound(table: Table, columns: Sequence[str]) -> dict[str, Any]:
    """Elsewhere: the columns of one row bound as `a_<column>`, for an executemany. (Not
    under the columns' own names: SQLAlchemy keeps those for an UPDATE's SET.)"""
    return {c: bindparam(f"a_{c}", type_=table.c[c].type) for c in columns}


def _unbounded(type_: Any) -> Any:
    # An explicit cast to VARCHAR(36)[] would cut a longer value down to 36 characters, and
    # a lookup would find the row whose id is its first 36.
    return String() if isinstance(type_, String) else type_


class AnyOf(ColumnElement[bool]):
    """`column` is one of the list bound as `name`, one statement text whatever the list's
    length: `column = ANY(:name)` with an array on PostgreSQL, an expanding `IN` elsewhere.

    An expanding `IN` is a new SQL text for every length of list, and asyncpg prepares each
    text once a connection (a round trip to PostgreSQL), keeping 100 a connection: with lists
    of 1 to 64 patients over a pool of 10, the hot statements were prepared again and again.
    """

    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True  # a comparison: no `= 1` where booleans are integers
    _traverse_internals = [  # noqa: RUF012 (SQLAlchemy's own declaration)
        ("column", InternalTraversal.dp_clauseelement),
        ("name", InternalTraversal.dp_string),
    ]

    def __init__(self, column: ColumnElement[Any], name: str) -> None:
        self.column = column
        self.name = name


@compiles(AnyOf)
def _any_of_in(element: AnyOf, compiler: SQLCompiler, **kw: Any) -> str:
    return str(compiler.process(element.column.in_(bindparam(element.name, expanding=True)), **kw))


@compiles(AnyOf, "postgresql")
def _any_of_array(element: AnyOf, compiler: SQLCompiler, **kw: Any) -> str:
    array = bindparam(element.name, type_=postgresql.ARRAY(_unbounded(element.column.type)))
    return str(compiler.process(element.column == any_(array), **kw))


def any_of(column: ColumnElement[Any], name: str) -> AnyOf:
    """`column IN` the list bound as `name`, one statement text whatever its length."""
    return AnyOf(column, name)


def unnested(table: Table, columns: Sequence[str]) -> Select[Any]:
    """PostgreSQL: the rows bound as one array a column (each under the column's name, as
    `as_arrays` makes them), in the order given. One statement text whatever the number of
    rows, where executemany of an INSERT … RETURNING is sent as one multi-row `VALUES` a
    number of rows (prepared again for each)."""
    rows = _unnest(table, columns, ordinality="n")
    return select(*(rows.c[c] for c in columns)).order_by(rows.c.n)


def _unnest(
    table: Table,
    columns: Sequence[str],
    *,
    prefix: str = "",
    ordinality: str | None = None,
    name: str | None = None,
) -> Any:
    """`unnest` of one array parameter a column (`<prefix><column>`, typed as the column's
    array), as a derived table of those columns (and `ordinality`, the row's position)."""
    arrays = [
        bindparam(prefix + c, type_=postgresql.ARRAY(_unbounded(table.c[c].type))) for c in columns
    ]
    return (
        func.unnest(*arrays)
        .table_valued(*columns, with_ordinality=ordinality)
        .render_derived(name=name)
    )


def as_arrays(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], prefix: str = ""
) -> dict[str, list[Any]]:
    """The parameters of an `unnested` statement: rows as one list a column."""
    return {prefix + c: [row[c] for row in rows] for c in columns}
