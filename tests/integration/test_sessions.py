"""Sessions end on the server: after signing out, a password reset, disablement or a lockout,
a copy of the session cookie (another tab, another device, a stolen copy) no longer works.
Against `medmesh serve` in a child process, with the real command line, on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from medmesh import provisioning
from medmesh.cli import app as cli
from medmesh.store.database import Database
from medmesh.web.session import SESSION_COOKIE
from tests.accounts_fixtures import (
    Person,
    csrf_of,
    make_clinician,
    make_patient_account,
    sign_in,
    submit_password,
)
from tests.live_server import LiveServer, live_server


@pytest.fixture
async def server(database_url: str, tmp_path: Path) -> AsyncIterator[LiveServer]:
    with live_server(database_url, tmp_path / "server.log") as running:
        yield running


def _cli(database_url: str, *args: str, stdin: str | None = None) -> None:
    result = CliRunner().invoke(
        cli, list(args), input=stdin, env={"MEDMESH_DATABASE_URL": database_url}
    )
    assert result.exit_code == 0, result.output


async def _signed_in_copy(server: LiveServer, person: Person) -> tuple[httpx.AsyncClient, str]:
    """Sign in in one client; a second client holding a copy of its cookie, and the first's
    CSRF token. The copy works until the session is ended."""
    browser = httpx.AsyncClient(base_url=server.base_url)
    csrf = await sign_in(browser, person)
    copy = httpx.AsyncClient(
        base_url=server.base_url, cookies={SESSION_COOKIE: browser.cookies[SESSION_COOKIE]}
    )
    home = "/" if person.totp_secret is not None else "/me"
    assert (await copy.get(home)).status_code == 200
    await browser.aclose()
    return copy, csrf


async def _ended(copy: httpx.AsyncClient, home: str) -> bool:
    answer = await copy.get(home)
    return answer.status_code == 303 and answer.headers["location"].startswith("/login")


async def test_signing_out_ends_a_copied_session_cookie(
    server: LiveServer, database: Database
) -> None:
    ada = await make_clinician(database, "ada")
    async with httpx.AsyncClient(base_url=server.base_url) as browser:
        csrf = await sign_in(browser, ada)
        copy = httpx.AsyncClient(
            base_url=server.base_url, cookies={SESSION_COOKIE: browser.cookies[SESSION_COOKIE]}
        )
        assert (await copy.get("/")).status_code == 200
        out = await browser.post("/logout", data={"csrf_token": csrf})
        assert out.status_code == 303
    assert await _ended(copy, "/")
    await copy.aclose()


async def _patient(database: Database, username: str) -> Person:
    patient = await provisioning.create_patient(
        database, family="Doe", given="Jo", identifier=username
    )
    return await make_patient_account(database, patient.id, username)


async def test_a_password_reset_ends_every_session(
    server: LiveServer, database: Database, database_url: str
) -> None:
    jo = await _patient(database, "jo.doe")
    copy, _ = await _signed_in_copy(server, jo)
    new = "a quiet harbour under winter stars"
    await asyncio.to_thread(
        _cli, database_url, "user", "reset-password", "jo.doe", "--password-stdin", stdin=new
    )
    assert await _ended(copy, "/me")
    await copy.aclose()


async def test_a_disabled_accounts_sessions_stay_ended_when_it_is_enabled_again(
    server: LiveServer, database: Database, database_url: str
) -> None:
    jo = await _patient(database, "jo.doe")
    copy, _ = await _signed_in_copy(server, jo)
    await asyncio.to_thread(_cli, database_url, "user", "disable", "jo.doe")
    await asyncio.to_thread(_cli, database_url, "user", "enable", "jo.doe")
    assert await _ended(copy, "/me")
    await copy.aclose()


async def test_a_lockout_ends_every_session_of_the_account(
    server: LiveServer, database: Database
) -> None:
    jo = await _patient(database, "jo.doe")
    copy, _ = await _signed_in_copy(server, jo)
    async with httpx.AsyncClient(base_url=server.base_url) as guesser:
        for _ in range(5):
            answer = await submit_password(guesser, "jo.doe", "wrong horse battery staple")
        assert answer.status_code == 429
    assert await _ended(copy, "/me")
    # The account's owner signs in again once it is unlocked; the old copy stays ended.
    await provisioning.unlock(database, "jo.doe")
    async with httpx.AsyncClient(base_url=server.base_url) as browser:
        assert csrf_of((await browser.get("/login")).text)
        await sign_in(browser, jo)
        assert (await browser.get("/me")).status_code == 200
    assert await _ended(copy, "/me")
    await copy.aclose()
