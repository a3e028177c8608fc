"""Copies of the main database and their restore: SQLite through its online backup API (a
consistent copy while the platform keeps writing), PostgreSQL through `pg_dump`, `pg_restore`
and `psql`.
Only the main database is copied: the key store and the master keyring are not (docs/backups.md).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from medmesh.domain.errors import MedmeshError


class BackupError(MedmeshError):
    """A backup or restore that could not be made; the message says what to change."""


@dataclass(frozen=True, slots=True)
class BackupTools:
    """The PostgreSQL client programs and the server's major version they must match."""

    pg_dump: str
    pg_restore: str
    psql: str
    server_major: int


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(url.database)


def _copy_sqlite(source: Path, target: Path) -> None:
    # The online backup API copies a consistent snapshot page by page, WAL included, while
    # other connections keep reading and writing.
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    try:
        try:
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise BackupError(
                f"{source} is not an SQLite database ({exc}); nothing changed"
            ) from None
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq URL without the password, and an environment carrying it (so it never shows
    in the process list)."""
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _client_major(program: str) -> int:
    found = shutil.which(program)
    if found is None:
        raise BackupError(f"{program} is not installed (Debian: apt-get install postgresql-client)")
    out = _run([found, "--version"], dict(os.environ), f"{program} --version")
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if match is None:
        raise BackupError(f"cannot read the version of {program}: {out.strip()!r}")
    return int(match.group(1))


def postgres_tools(url: URL) -> BackupTools:
    """The client programs, refused unless their major version is the server's: an older
    pg_dump cannot read a newer server, and a dump made by a newer one may not restore into
    this server."""
    for program in ("pg_dump", "pg_restore", "psql"):
        _client_major(program)  # each is installed
    dsn, env = _libpq(url)
    ask = [str(shutil.which("psql")), "--no-psqlrc", "--tuples-only", "--no-align"]
    ask += ["--command=SHOW server_version_num", f"--dbname={dsn}"]
    answer = _run(ask, env, "asking the server's version")
    server_major = int(answer.strip()) // 10000
    for program in ("pg_dump", "pg_restore", "psql"):
        client_major = _client_major(program)
        if client_major != server_major:
            raise BackupError(
                f"{program} is version {client_major} but the server is PostgreSQL "
                f"{server_major}: install the matching client (postgresql-client-{server_major})"
            )
    where = {program: str(shutil.which(program)) for program in ("pg_dump", "pg_restore", "psql")}
    return BackupTools(where["pg_dump"], where["pg_restore"], where["psql"], server_major)


def _run(argv: list[str], env: dict[str, str], what: str) -> str:
    """Run a PostgreSQL client program; its output, or BackupError with its last message."""
    # The client programs found on PATH, with arguments we build; no shell.
    done = subprocess.run(  # noqa: S603 (see above)
        argv, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        # The clients' messages name objects and connection problems, not row values.
        detail = done.stderr.strip().splitlines()[-1:] or ["no message"]
        raise BackupError(f"{what} failed (exit {done.returncode}): {detail[0]}")
    return done.stdout


def backup(database_url: str, target: Path) -> None:
    """Write a copy of the main database to `target` (refused if it exists)."""
    if target.exists():
        raise BackupError(f"{target} exists already; name a new file")
    url = make_url(database_url)
    if url.drivername.startswith("sqlite"):
        _copy_sqlite(_sqlite_path(url), target)
        return
    tools = postgres_tools(url)
    dsn, env = _libpq(url)
    # Custom format: compressed, and pg_restore can pick objects out of it.
    argv = [tools.pg_dump, "--format=custom", "--no-owner", f"--file={target}", dsn]
    _run(argv, env, "pg_dump")


def restore(database_url: str, source: Path) -> None:
    """Replace the main database's contents with the backup `source`. Stop every medmesh
    process of the deployment first."""
    if not source.is_file():
        raise BackupError(f"{source} is not a backup file")
    url = make_url(database_url)
    if url.drivername.startswith("sqlite"):
        target = _sqlite_path(url)
        _copy_sqlite(source, target)
        return
    tools = postgres_tools(url)
    _restore_postgres(tools, url, source)


# The dump is replayed into an emptied schema rather than with pg_restore --clean, which cannot
# drop the constraints of partitions (observations is partitioned), all in one transaction that
# is committed only once pg_restore has written the whole dump: a failed restore changes nothing.
_BEGIN = b"BEGIN;\nDROP SCHEMA public CASCADE;\nCREATE SCHEMA public;\n"
_COMMIT = b"COMMIT;\n"


def _restore_postgres(tools: BackupTools, url: URL, source: Path) -> None:
    dsn, env = _libpq(url)
    _run([tools.pg_restore, "--list", str(source)], env, f"nothing changed: reading {source}")
    psql = [tools.psql, "--quiet", "--no-psqlrc", "--set=ON_ERROR_STOP=1", f"--dbname={dsn}"]
    sql = [tools.pg_restore, "--no-owner", "--file=-", str(source)]
    with subprocess.Popen(  # noqa: S603 (as in _run)
        psql, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    ) as replay:
        assert replay.stdin is not None and replay.stderr is not None
        try:
            replay.stdin.write(_BEGIN)
            replay.stdin.flush()  # before pg_restore writes to the same pipe
            dump = subprocess.run(  # noqa: S603 (as in _run)
                sql, env=env, stdout=replay.stdin, stderr=subprocess.PIPE, check=False
            )
            if dump.returncode == 0:
                replay.stdin.write(_COMMIT)
            replay.stdin.close()  # without COMMIT, psql rolls the transaction back
        except BrokenPipeError:
            pass  # psql stopped at an error: its message follows
        errors = replay.stderr.read().decode("utf-8", "replace")
        replay.wait()
    if replay.returncode != 0:
        detail = errors.strip().splitlines()[:1] or ["no message"]
        raise BackupError(
            f"restore failed (exit {replay.returncode}), nothing changed: {detail[0]}"
        )
    if dump.returncode != 0:
        detail = dump.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["?"]
        raise BackupError(f"pg_restore could not read {source}, nothing changed: {detail[0]}")
