"""Accounts through the real app, in-process, on both backends: signing in with a password and
a TOTP code, enrolment, lockout and throttling, patients' own page, session cookies, disabled
accounts; and the `medmesh user` and `medmesh org` commands."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pyotp
import pytest
from argon2 import PasswordHasher
from typer.testing import CliRunner

from medmesh import provisioning
from medmesh.access.identity.principals import Role
from medmesh.app import create_app
from medmesh.cli import app as cli
from medmesh.config import Settings
from medmesh.http.deps import WallClock, provide
from medmesh.store.database import Database
from medmesh.store.users import Users
from medmesh.testing import ManualTimer
from tests import accounts_fixtures
from tests.accounts_fixtures import (
    STAFF_PASSWORD,
    Person,
    code_for,
    csrf_of,
    enrolment_secret,
    make_clinician,
    make_patient_account,
    sign_in,
    submit_code,
    submit_password,
)
from tests.conftest import World

LOCKED = "Too many failed sign-ins. This account is locked until"
WRONG = "The username or password is not right."

Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ManualTimer:
    """The web UI's clock, moved by the test (no sleeping): given to every app `client` makes,
    and read by the fixtures that compute authenticator codes."""
    timer = ManualTimer(datetime.now(UTC).timestamp())
    monkeypatch.setattr(accounts_fixtures, "ui_clock", timer)
    return timer


@pytest.fixture
def client(database_url: str, clock: ManualTimer) -> Client:
    """The real app with settings of the test's choosing."""

    @asynccontextmanager
    async def make(
        base_url: str = "http://test", **settings: Any
    ) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(Settings(database_url=database_url, auto_migrate=False, **settings))
        provide(app, WallClock, clock)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as c,
        ):
            yield c

    return make


@pytest.fixture
async def http(client: Client) -> AsyncIterator[httpx.AsyncClient]:
    async with client() as c:
        yield c


def run_cli(database_url: str, *args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli, list(args), input=stdin, env={"MEDMESH_DATABASE_URL": database_url}
    )
    return result.exit_code, result.output


async def fail_password(http: httpx.AsyncClient, username: str, times: int) -> httpx.Response:
    response = None
    for _ in range(times):
        response = await submit_password(http, username, "wrong horse battery")
    assert response is not None
    return response


# --- signing in ----------------------------------------------------------------------------


async def test_a_clinician_signs_in_with_password_and_code_and_lands_on_the_panel(
    http: httpx.AsyncClient, database: Database, world: World
) -> None:
    ada = await make_clinician(database, "ada", "Dr Ada Lovelace")
    first = await submit_password(http, "Ada", STAFF_PASSWORD)  # usernames ignore case
    assert first.status_code == 303 and first.headers["location"] == "/login/code"
    assert (await http.get("/")).headers["location"] == "/login"  # not signed in yet
    page = await http.get("/login/code")
    assert 'autocomplete="one-time-code"' in page.text
    wrong = await submit_code(http, "000000" if code_for(ada) != "000000" else "111111")
    assert wrong.status_code == 401 and 'role="alert"' in wrong.text
    assert "not right" in wrong.text
    second = await submit_code(http, code_for(ada))
    assert second.status_code == 303 and second.headers["location"] == "/"
    panel = await http.get("/")
    assert panel.status_code == 200 and "Dr Ada Lovelace" in panel.text


async def test_a_wrong_password_and_an_unknown_username_get_the_same_answer(
    http: httpx.AsyncClient, database: Database
) -> None:
    await make_clinician(database, "ada")
    wrong = await submit_password(http, "ada", "wrong horse battery")
    unknown = await submit_password(http, "nobody", "wrong horse battery")
    assert wrong.status_code == unknown.status_code == 401
    for response in (wrong, unknown):
        assert WRONG in response.text and 'role="alert"' in response.text
        assert 'aria-invalid="true"' in response.text
    assert (await http.get("/")).headers["location"] == "/login"


async def test_a_code_is_not_accepted_twice(
    client: Client, database: Database, clock: ManualTimer
) -> None:
    ada = await make_clinician(database, "ada")
    async with client() as first:
        await sign_in(first, ada)
    async with client() as second:
        await submit_password(second, "ada", STAFF_PASSWORD)
        replay = await submit_code(second, code_for(ada))
        assert replay.status_code == 401 and "used already" in replay.text
        fresh = await submit_code(second, code_for(ada, steps_ahead=1))
        assert fresh.status_code == 303


async def test_signing_in_starts_a_new_session_with_a_new_csrf_token(
    http: httpx.AsyncClient, database: Database
) -> None:
    ada = await make_clinician(database, "ada")
    before = csrf_of((await http.get("/login")).text)
    after = await sign_in(http, ada)
    assert after != before
    refused = await http.post("/logout", data={"csrf_token": before})
    assert refused.status_code == 403


async def test_a_new_password_attempt_cancels_an_earlier_accepted_password(
    http: httpx.AsyncClient, database: Database
) -> None:
    await make_clinician(database, "ada")
    await submit_password(http, "ada", STAFF_PASSWORD)
    assert (await http.get("/login/code")).status_code == 200
    await submit_password(http, "someone.else", "wrong horse battery")
    assert (await http.get("/login/code")).headers["location"] == "/login"


async def test_an_overlong_password_is_refused_like_a_wrong_one(
    http: httpx.AsyncClient, database: Database
) -> None:
    await make_clinician(database, "ada")
    response = await submit_password(http, "ada", STAFF_PASSWORD + "x" * 2000)
    assert response.status_code == 401 and WRONG in response.text


async def test_the_code_step_expires_after_five_minutes(
    http: httpx.AsyncClient, database: Database, clock: ManualTimer
) -> None:
    ada = await make_clinician(database, "ada")
    await submit_password(http, "ada", STAFF_PASSWORD)
    form = await http.get("/login/code")
    clock.advance(5 * 60 + 1)
    late = await http.post(
        "/login/code", data={"code": code_for(ada), "csrf_token": csrf_of(form.text)}
    )
    assert late.status_code == 401 and "took too long" in late.text
    assert (await http.get("/")).headers["location"] == "/login"


async def test_an_old_hash_is_replaced_with_todays_parameters_at_sign_in(
    http: httpx.AsyncClient, database: Database
) -> None:
    ada = await make_clinician(database, "ada")
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(STAFF_PASSWORD)
    async with database.write() as conn:
        await Users(conn).update(ada.user_id, password_hash=weak)
    await sign_in(http, ada)
    async with database.read() as conn:
        stored = await Users(conn).get(ada.user_id)
    assert stored is not None and stored.password_hash.startswith("$argon2id$v=19$m=65536,t=3")


# --- lockout and throttling ----------------------------------------------------------------


async def test_five_wrong_passwords_lock_the_account_with_a_clear_message_until_it_ends(
    http: httpx.AsyncClient, database: Database, clock: ManualTimer
) -> None:
    ada = await make_clinician(database, "ada")
    assert (await fail_password(http, "ada", 4)).status_code == 401
    fifth = await fail_password(http, "ada", 1)
    until = datetime.fromtimestamp(clock.now, UTC).replace(second=0, microsecond=0)
    assert fifth.status_code == 429 and LOCKED in fifth.text
    assert "ask your organisation&#39;s admin to unlock it sooner" in fifth.text
    assert 'role="alert"' in fifth.text
    right = await submit_password(http, "ada", STAFF_PASSWORD)
    assert right.status_code == 429 and LOCKED in right.text  # even the right password
    assert f"{(until.minute + 15) % 60:02d} UTC" in right.text
    clock.advance(15 * 60 + 1)
    await sign_in(http, ada)
    async with database.read() as conn:
        stored = await Users(conn).get(ada.user_id)
    assert stored is not None and stored.failed_logins == 0


async def test_the_next_lock_lasts_twice_as_long(
    http: httpx.AsyncClient, database: Database, clock: ManualTimer
) -> None:
    await make_clinician(database, "ada")
    await fail_password(http, "ada", 5)
    clock.advance(15 * 60 + 1)
    await fail_password(http, "ada", 5)
    clock.advance(15 * 60 + 1)
    still = await submit_password(http, "ada", STAFF_PASSWORD)
    assert still.status_code == 429 and LOCKED in still.text
    clock.advance(15 * 60)
    assert (await submit_password(http, "ada", STAFF_PASSWORD)).status_code == 303


async def test_wrong_codes_count_towards_the_lock(
    http: httpx.AsyncClient, database: Database, clock: ManualTimer
) -> None:
    ada = await make_clinician(database, "ada")
    wrong = "000000" if code_for(ada) != "000000" else "111111"
    await fail_password(http, "ada", 2)
    for _ in range(2):
        await submit_password(http, "ada", STAFF_PASSWORD)
        assert (await submit_code(http, wrong)).status_code == 401
    await submit_password(http, "ada", STAFF_PASSWORD)
    locked = await submit_code(http, wrong)
    assert locked.status_code == 429 and LOCKED in locked.text
    assert (await http.get("/login/code")).headers["location"] == "/login"


async def test_an_admin_unlocks_an_account_from_the_command_line(
    http: httpx.AsyncClient, database: Database, database_url: str
) -> None:
    ada = await make_clinician(database, "ada")
    await fail_password(http, "ada", 5)
    status, output = await asyncio.to_thread(run_cli, database_url, "user", "unlock", "ada")
    assert status == 0 and "unlocked" in output
    await sign_in(http, ada)


async def test_an_unknown_username_locks_like_a_real_one(
    http: httpx.AsyncClient, database: Database
) -> None:
    await make_clinician(database, "ada")
    real = await fail_password(http, "ada", 5)
    unknown = await fail_password(http, "nobody", 5)
    assert real.status_code == unknown.status_code == 429
    assert LOCKED in unknown.text


async def test_an_address_trying_many_usernames_is_turned_away(
    client: Client, database: Database, clock: ManualTimer
) -> None:
    ada = await make_clinician(database, "ada")
    async with client(signin_address_max_failures=3, signin_address_window_minutes=10) as http:
        for name in ("amy", "bob", "cy"):
            assert (await submit_password(http, name, "spring2026")).status_code == 401
        blocked = await submit_password(http, "ada", STAFF_PASSWORD)
        assert blocked.status_code == 429
        assert "Too many failed sign-ins from your network. Try again after" in blocked.text
        clock.advance(10 * 60 + 1)
        await sign_in(http, ada)


# --- enrolment -----------------------------------------------------------------------------


async def test_a_new_clinician_sets_up_an_authenticator_before_finishing_signing_in(
    http: httpx.AsyncClient, database: Database, clock: ManualTimer
) -> None:
    await make_clinician(database, "grace", "Dr Grace Hopper", enrolled=False)
    first = await submit_password(http, "grace", STAFF_PASSWORD)
    assert first.headers["location"] == "/login/enrol"
    page = await http.get("/login/enrol")
    secret = enrolment_secret(page.text)
    assert " ".join(secret[i : i + 4] for i in range(0, 32, 4)) in page.text  # typed by hand
    assert page.text == (await http.get("/login/enrol")).text  # a reload shows the same key
    assert (await http.get("/")).headers["location"] == "/login"
    wrong = await submit_code(http, "123456", "/login/enrol")
    if pyotp.TOTP(secret).verify("123456", valid_window=1):
        pytest.skip("the random key's code happens to be 123456")
    assert wrong.status_code == 401 and 'role="alert"' in wrong.text
    confirmed = await submit_code(
        http, pyotp.TOTP(secret).at(datetime.fromtimestamp(clock.now, UTC)), "/login/enrol"
    )
    assert confirmed.status_code == 303 and confirmed.headers["location"] == "/"
    assert "Dr Grace Hopper" in (await http.get("/")).text
    csrf = csrf_of((await http.get("/")).text)
    await http.post("/logout", data={"csrf_token": csrf})
    again = await submit_password(http, "grace", STAFF_PASSWORD)
    assert again.headers["location"] == "/login/code"  # enrolled for good


async def test_after_a_totp_reset_the_clinician_enrols_again(
    http: httpx.AsyncClient, database: Database, database_url: str
) -> None:
    await make_clinician(database, "ada")
    status, _ = await asyncio.to_thread(run_cli, database_url, "user", "reset-totp", "ada")
    assert status == 0
    first = await submit_password(http, "ada", STAFF_PASSWORD)
    assert first.headers["location"] == "/login/enrol"


# --- patients ------------------------------------------------------------------------------


async def test_a_patient_without_totp_lands_on_their_own_page(
    http: httpx.AsyncClient, database: Database, world: World
) -> None:
    jane = await make_patient_account(database, world.patient_id)
    first = await submit_password(http, jane.username, jane.password)
    assert first.status_code == 303 and first.headers["location"] == "/me"
    me = await http.get("/me")
    assert me.status_code == 200 and "Jane Doe" in me.text and "Two-step sign-in is off" in me.text
    assert (await http.get("/")).headers["location"] == "/me"  # the panel is for staff
    assert (await http.get(f"/patients/{world.patient_id}")).headers["location"] == "/me"
    assert (await http.get("/login")).headers["location"] == "/me"


async def test_a_patient_may_turn_on_two_step_sign_in(
    http: httpx.AsyncClient, database: Database, world: World, clock: ManualTimer
) -> None:
    jane = await make_patient_account(database, world.patient_id)
    await sign_in(http, jane)
    page = await http.get("/me/two-step")
    secret = enrolment_secret(page.text)
    code = pyotp.TOTP(secret).at(datetime.fromtimestamp(clock.now, UTC))
    wrong = await http.post(
        "/me/two-step",
        data={"code": f"{(int(code) + 1) % 1_000_000:06d}", "csrf_token": csrf_of(page.text)},
    )
    assert wrong.status_code == 400 and 'role="alert"' in wrong.text
    assert "Two-step sign-in is off" in (await http.get("/me")).text
    done = await http.post("/me/two-step", data={"code": code, "csrf_token": csrf_of(page.text)})
    assert done.status_code == 303
    assert "Two-step sign-in is on" in (await http.get("/me")).text
    await http.post("/logout", data={"csrf_token": csrf_of(page.text)})
    later = await submit_password(http, jane.username, jane.password)
    assert later.headers["location"] == "/login/code"
    await sign_in(http, Person(jane.user_id, jane.username, jane.password, secret), steps_ahead=1)


async def test_a_clinician_has_no_patient_page(http: httpx.AsyncClient, database: Database) -> None:
    await sign_in(http, await make_clinician(database, "ada"))
    assert (await http.get("/me")).headers["location"] == "/"


# --- sessions ------------------------------------------------------------------------------


async def test_forms_without_the_sessions_csrf_token_are_refused(
    http: httpx.AsyncClient, database: Database
) -> None:
    await make_clinician(database, "ada")
    await http.get("/login")
    no_token = await http.post("/login", data={"username": "ada", "password": STAFF_PASSWORD})
    assert no_token.status_code == 403
    forged = await http.post(
        "/login", data={"username": "ada", "password": STAFF_PASSWORD, "csrf_token": "x"}
    )
    assert forged.status_code == 403
    await submit_password(http, "ada", STAFF_PASSWORD)
    assert (await http.post("/login/code", data={"code": "123456"})).status_code == 403


async def test_the_session_cookie_is_http_only_strict_and_secure_when_configured(
    client: Client, database: Database
) -> None:
    ada = await make_clinician(database, "ada")
    async with client() as http:
        await submit_password(http, "ada", STAFF_PASSWORD)
        form = await http.get("/login/code")
        done = await http.post(
            "/login/code", data={"code": code_for(ada), "csrf_token": csrf_of(form.text)}
        )
        cookie = done.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
        assert STAFF_PASSWORD not in done.headers["set-cookie"]
    async with client("https://test", session_https_only=True) as https:
        answer = await submit_password(https, "ada", STAFF_PASSWORD)
        cookie = answer.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie


async def test_the_session_ends_after_inactivity(
    http: httpx.AsyncClient, database: Database, clock: ManualTimer
) -> None:
    await sign_in(http, await make_clinician(database, "ada"))
    clock.advance(14 * 60)
    assert (await http.get("/")).status_code == 200
    clock.advance(15 * 60 + 1)
    assert (await http.get("/")).headers["location"] == "/login?expired=1"
    assert (await http.get("/")).headers["location"] == "/login"  # and it is gone


async def test_the_session_ends_after_twelve_hours_however_active(
    http: httpx.AsyncClient, database: Database, clock: ManualTimer
) -> None:
    csrf = await sign_in(http, await make_clinician(database, "ada"))
    for _ in range(12 * 6 - 1):  # a report of activity every ten minutes
        clock.advance(10 * 60)
        active = await http.post("/session/activity", headers={"X-CSRF-Token": csrf})
        assert active.status_code == 204
    clock.advance(10 * 60 + 1)
    assert (await http.get("/")).headers["location"] == "/login?expired=1"


async def test_a_disabled_accounts_session_ends_at_its_next_request(
    http: httpx.AsyncClient, database: Database, database_url: str
) -> None:
    ada = await make_clinician(database, "ada")
    await sign_in(http, ada)
    status, _ = await asyncio.to_thread(run_cli, database_url, "user", "disable", "ada")
    assert status == 0
    assert (await http.get("/")).headers["location"] == "/login?expired=1"
    refused = await submit_password(http, "ada", STAFF_PASSWORD)
    assert refused.status_code == 401 and WRONG in refused.text


async def test_a_changed_role_ends_the_session(http: httpx.AsyncClient, database: Database) -> None:
    ada = await make_clinician(database, "ada")
    await sign_in(http, ada)
    async with database.write() as conn:
        await Users(conn).update(ada.user_id, role=Role.ORG_ADMIN.value)
    assert (await http.get("/")).headers["location"] == "/login?expired=1"


# --- the command line ----------------------------------------------------------------------


def test_accounts_are_created_from_the_command_line_with_the_password_on_stdin(
    database_url: str,
) -> None:
    status, output = run_cli(database_url, "org", "create", "st-marys", "--name", "St Mary's")
    assert status == 0, output
    status, output = run_cli(
        database_url,
        "user", "create", "Ada", "--name", "Dr Ada", "--role", "clinician",
        "--organization", "st-marys", "--password-stdin",
        stdin=STAFF_PASSWORD + "\n",
    )  # fmt: skip
    assert status == 0, output

    async def stored() -> Any:
        database = Database(database_url)
        try:
            async with database.read() as conn:
                return await Users(conn).find_by_username("ada")
        finally:
            await database.dispose()

    record = asyncio.run(stored())
    assert record.organization_id == "st-marys" and record.role == "clinician"
    assert record.password_hash.startswith("$argon2id$") and STAFF_PASSWORD not in output


def test_the_password_prompt_is_hidden_and_confirmed(database_url: str) -> None:
    status, output = run_cli(
        database_url,
        "user", "create", "ada", "--name", "Dr Ada", "--role", "org-admin",
        stdin=f"{STAFF_PASSWORD}\n{STAFF_PASSWORD}\n",
    )  # fmt: skip
    assert status == 0, output
    assert "Repeat for confirmation" in output and STAFF_PASSWORD not in output


def test_the_command_line_refuses_bad_accounts_with_clear_messages(
    database_url: str,
) -> None:
    status, patient_id = run_cli(
        database_url, "patient", "create", "--family", "Doe", "--given", "Jo", "--identifier", "M9"
    )
    assert status == 0
    patient = ["--role", "patient", "--patient", patient_id.strip()]
    cases = [
        (["--role", "clinician"], "password123456", "list of common or breached passwords"),
        (patient, "tulip meadow 7", "at least 15 characters"),
        (["--role", "patient"], "a long walk by the river", "needs its patient record"),
        (["--role", "clinician", "--organization", "nope"], STAFF_PASSWORD, "no organisation"),
        (["--role", "system"], STAFF_PASSWORD, "Invalid value for '--role'"),
    ]
    for extra, password, message in cases:
        status, output = run_cli(
            database_url,
            "user", "create", "ada", "--name", "Dr Ada", *extra, "--password-stdin",
            stdin=password + "\n",
        )  # fmt: skip
        assert status != 0 and message in output, (extra, output)
    status, output = run_cli(database_url, "user", "unlock", "nobody")
    assert status == 1 and "no account with this username" in output


async def test_a_password_reset_from_the_command_line_checks_the_rules(
    http: httpx.AsyncClient, database: Database, database_url: str
) -> None:
    ada = await make_clinician(database, "ada")
    status, output = await asyncio.to_thread(
        run_cli,
        database_url,
        "user",
        "reset-password",
        "ada",
        "--password-stdin",
        stdin="ada12345\n",
    )
    assert status == 1 and "username" in output
    new = "violet kettle harbour"
    status, _ = await asyncio.to_thread(
        run_cli, database_url, "user", "reset-password", "ada", "--password-stdin", stdin=new + "\n"
    )
    assert status == 0
    await sign_in(http, Person(ada.user_id, "ada", new, ada.totp_secret))


async def test_a_patient_account_belongs_to_an_existing_patient_record(database: Database) -> None:
    with pytest.raises(Exception, match="Patient not found"):
        await provisioning.create_user(
            database,
            username="jane",
            display_name="Jane",
            role=Role.PATIENT,
            password="a long walk by the river",
            patient_id="no-such-patient",
        )


async def test_a_totp_step_is_recorded_once_and_only_forwards(database: Database) -> None:
    ada = await make_clinician(database, "ada")
    async with database.write() as conn:
        users = Users(conn)
        assert await users.use_totp_step(ada.user_id, 1000)
        assert not await users.use_totp_step(ada.user_id, 1000)  # the same code again
        assert not await users.use_totp_step(ada.user_id, 999)
        assert await users.use_totp_step(ada.user_id, 1001)
        assert await users.count_failure(ada.user_id) == 1
        assert await users.count_failure(ada.user_id) == 2
