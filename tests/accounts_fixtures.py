"""People with accounts, and signing them in to the web UI the way a browser does: the form's
CSRF token, username and password, then a code computed by pyotp (as an authenticator app)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pyotp

from medmesh import provisioning
from medmesh.access.identity.principals import Role
from medmesh.store.database import Database

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
STAFF_PASSWORD = "correct horse battery"  # 21 characters, not on the list
PATIENT_PASSWORD = "a long walk by the river at dawn"


@dataclass(frozen=True, slots=True)
class Person:
    user_id: str
    username: str
    password: str
    totp_secret: str | None


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def enrolment_secret(html: str) -> str:
    """The TOTP key in an enrolment page's otpauth:// link, as an authenticator app reads it."""
    found = re.search(r'href="(otpauth://[^"]+)"', html)
    assert found, "no otpauth:// link on the page"
    secret: str = pyotp.parse_uri(found.group(1).replace("&amp;", "&")).secret
    return secret


# The clock the web UI under test reads: the system's, unless a test gives its app a
# ManualTimer (medmesh.testing) and points this at the same timer.
ui_clock: Callable[[], float] = time.time


def clock() -> datetime:
    """The time the web UI reads, for the codes an authenticator app would show."""
    return datetime.fromtimestamp(ui_clock(), UTC)


def code_for(person: Person, *, steps_ahead: int = 0) -> str:
    """The code an authenticator app shows now; `steps_ahead=1` gives the next one (still
    accepted: the window is one step either side), for a second sign-in within 30 seconds,
    whose current code the first one used up."""
    assert person.totp_secret is not None
    totp = pyotp.TOTP(person.totp_secret)
    return totp.at(clock(), counter_offset=steps_ahead)


async def make_clinician(
    database: Database,
    username: str = "dr.test",
    display_name: str = "dr test",
    *,
    enrolled: bool = True,
    role: Role = Role.CLINICIAN,
) -> Person:
    account = await provisioning.create_user(
        database,
        username=username,
        display_name=display_name,
        role=role,
        password=STAFF_PASSWORD,
    )
    secret = None
    if enrolled:
        secret = pyotp.random_base32(32)
        await provisioning.activate_totp(database, username, secret)
    return Person(account.id, username, STAFF_PASSWORD, secret)


async def make_patient_account(
    database: Database, patient_id: str, username: str = "jane.doe"
) -> Person:
    account = await provisioning.create_user(
        database,
        username=username,
        display_name="Jane Doe",
        role=Role.PATIENT,
        password=PATIENT_PASSWORD,
        patient_id=patient_id,
    )
    return Person(account.id, username, PATIENT_PASSWORD, None)


async def submit_password(http: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    form = await http.get("/login")
    return await http.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": csrf_of(form.text)},
    )


async def submit_code(
    http: httpx.AsyncClient, code: str, path: str = "/login/code"
) -> httpx.Response:
    form = await http.get(path)
    return await http.post(path, data={"code": code, "csrf_token": csrf_of(form.text)})


async def sign_in(http: httpx.AsyncClient, person: Person, *, steps_ahead: int = 0) -> str:
    """Sign in with password and code; the CSRF token of the new session."""
    first = await submit_password(http, person.username, person.password)
    assert first.status_code == 303, first.text
    if person.totp_secret is not None:
        assert first.headers["location"] == "/login/code"
        second = await submit_code(http, code_for(person, steps_ahead=steps_ahead))
        assert second.status_code == 303, second.text
        home = second.headers["location"]
    else:
        home = first.headers["location"]
    return csrf_of((await http.get(home)).text)
