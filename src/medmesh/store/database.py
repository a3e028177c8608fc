"""Engines and transactions for the two backends behind one interface.

SQLite: WAL journal with synchronous=FULL (an acknowledged commit survives a crash or power
loss), and writes go through a single connection that opens its transactions with
BEGIN IMMEDIATE, so a write never fails half-way on a lock upgrade. PostgreSQL: one asyncpg pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.schema import CreateTable

from medmesh.crypto.envelope import Cipher
from medmesh.crypto.local import local_cipher
from medmesh.store.schema import observations_staging

Backend = Literal["sqlite", "postgresql"]

CIPHER = "medmesh.cipher"


def cipher_of(conn: AsyncConnection) -> Cipher:
    """The cipher of the database this connection belongs to."""
    cipher = conn.info.get(CIPHER)
    if not isinstance(cipher, Cipher):
        raise RuntimeError("this connection was not opened through medmesh's Database")
    return cipher


def normalize_url(url: str) -> str:
    """Accept plain `sqlite:///` and `postgresql://` URLs and pick the async driver."""
    parsed = make_url(url)
    if parsed.drivername in ("sqlite", "sqlite+aiosqlite"):
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+asyncpg"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself instead of the driver's implicit one.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=FULL",
        "PRAGMA foreign_keys=ON",
        "PRAGMA busy_timeout=10000",
    ):
        cursor.execute(pragma)
    cursor.close()


_POSTGRESQL = postgresql.dialect()  # type: ignore[no-untyped-call]
_CREATE_STAGING = str(
    CreateTable(observations_staging, if_not_exists=True).compile(dialect=_POSTGRESQL)
)


def _postgresql_staging(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Outside any transaction, so no rollback can take it away again.
    async def create(driver: Any) -> None:
        await driver.execute(_CREATE_STAGING)

    dbapi_connection.run_async(create)


class Database:
    """The database of one medmesh deployment."""

    def __init__(self, url: str, *, echo: bool = False, cipher: Cipher | None = None) -> None:
        self.url = normalize_url(url)
        # Every connection carries the cipher, so repositories (built on a connection) reach
        # the patients' data keys; by default the local keyring and key store (crypto/local.py).
        self.cipher = cipher if cipher is not None else local_cipher(self.url)
        self.backend: Backend = "sqlite" if self.url.startswith("sqlite") else "postgresql"
        if self.backend == "sqlite":
            self._reader = create_async_engine(self.url, echo=echo, hide_parameters=True)
            self._writer = create_async_engine(
                self.url, echo=echo, hide_parameters=True, pool_size=1, max_overflow=0
            )
            for engine, begin in ((self._reader, "BEGIN"), (self._writer, "BEGIN IMMEDIATE")):
                event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
                event.listen(
                    engine.sync_engine,
                    "begin",
                    lambda conn, _begin=begin: conn.exec_driver_sql(_begin),
                )
        else:
            self._reader = create_async_engine(
                self.url, echo=echo, hide_parameters=True, pool_size=10
            )
            self._writer = self._reader
            event.listen(self._writer.sync_engine, "connect", _postgresql_staging)
        # hide_parameters: SQL errors must not carry bound values (health data) into logs.
        for engine in {self._reader, self._writer}:
            event.listen(engine.sync_engine, "connect", self._attach_cipher)

    def _attach_cipher(self, _dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[CIPHER] = self.cipher

    @property
    def engine(self) -> AsyncEngine:
        """The engine for migrations and administration (the writer)."""
        return self._writer

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a read transaction."""
        async with self._reader.connect() as conn, conn.begin():
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a write transaction, committed when the block exits cleanly."""
        async with self._writer.connect() as conn, conn.begin():
            yield conn

    async def dispose(self) -> None:
        await self._reader.dispose()
        if self._writer is not self._reader:
            await self._writer.dispose()
