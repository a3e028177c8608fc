"""`medmesh audit`: verify the hash-chained audit log and print its head for anchoring.

Exit codes of `verify`: 0 the chain is intact, 1 it is broken, 2 it could not be verified
(bad option, database unreachable or not migrated). Neither command writes anything.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy.exc import SQLAlchemyError

from medmesh.access.audit.entries import ChainReport, InvalidAnchor, parse_anchor, verify_chain
from medmesh.config import Settings
from medmesh.services import build_database
from medmesh.store.audit_log import AuditLog, ChainHead
from medmesh.store.database import Database

audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)

T = TypeVar("T")
DatabaseUrl = Annotated[
    str | None,
    typer.Option(help="The database to check; default MEDMESH_DATABASE_URL (settings)"),
]


def _read_only(url: str | None, action: Callable[[Database], Awaitable[T]]) -> T:
    """Run `action` on the database without migrating it: checking must not change it."""

    async def main() -> T:
        settings = Settings()
        if url:
            settings = settings.model_copy(update={"database_url": url})
        database = build_database(settings)
        try:
            return await action(database)
        finally:
            await database.dispose()

    try:
        return asyncio.run(main())
    except (SQLAlchemyError, OSError) as exc:
        # The type only: a driver's message can quote SQL or connection details.
        typer.echo(
            f"error: cannot read the audit log ({type(exc).__name__}); is the database "
            "reachable and migrated (medmesh db upgrade)?",
            err=True,
        )
        raise typer.Exit(2) from None


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal's stderr; silent otherwise (scripts, cron, tests)."""
    if not sys.stderr.isatty() or total == 0:
        yield lambda _checked: None
        return
    columns = (TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("verify", total=total)
        yield lambda checked: bar.update(task, completed=checked)


@audit_app.command("verify")
def verify(
    anchor: Annotated[
        str | None,
        typer.Option(
            help="SEQ:HASH of a head written down earlier (medmesh audit head): also detects "
            "a truncated or rewritten chain"
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Check every record's hash and link; name the first broken record if any."""
    try:
        expected = parse_anchor(anchor) if anchor is not None else None
    except InvalidAnchor as exc:
        raise typer.BadParameter(str(exc), param_hint="--anchor") from None

    async def check(database: Database) -> ChainReport:
        async with database.read() as conn:
            head = await AuditLog(conn).head()
        with _progress(head.seq if head else 0) as progress:
            return await verify_chain(database, anchor=expected, progress=progress)

    report = _read_only(database_url, check)
    typer.echo(str(report))
    if not report.intact:
        raise typer.Exit(1)


@audit_app.command("head")
def head(database_url: DatabaseUrl = None) -> None:
    """Print the chain's head as SEQ:HASH, an anchor for `verify --anchor`.

    Write it down regularly where the database's administrators cannot change it.
    """

    async def read(database: Database) -> ChainHead | None:
        async with database.read() as conn:
            return await AuditLog(conn).head()

    found = _read_only(database_url, read)
    if found is None:
        typer.echo("error: the audit log is empty", err=True)
        raise typer.Exit(1)
    typer.echo(str(found))
