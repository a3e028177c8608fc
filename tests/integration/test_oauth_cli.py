"""The operator's commands for tokens and OAuth clients: `medmesh token create --user/--service`
and `medmesh client register/list/disable`, down to a partner using its token on a live server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from medmesh import provisioning
from medmesh.access.identity.principals import Role
from medmesh.cli import app
from medmesh.store.database import Database
from medmesh.store.schema import audit_log
from tests.live_server import live_server
from tests.oauth_fixtures import assertion, ec_key, public_jwks, rsa_key, token_form

PUBLIC_BASE = "https://medmesh.example"


@pytest.fixture
def cli_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MEDMESH_DATABASE_URL", database_url)
    # Inherited by the live server: the URL partners know it by, as behind a proxy.
    monkeypatch.setenv("MEDMESH_PUBLIC_BASE_URL", PUBLIC_BASE)
    return database_url


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def fails(*args: str, code: int = 1) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def make_accounts(database_url: str) -> None:
    async def create() -> None:
        database = Database(database_url)
        try:
            patient = await provisioning.create_patient(
                database, family="Ng", given="Li", identifier="9"
            )
            for username, role, patient_id in (
                ("dr.li", Role.CLINICIAN, None),
                ("li.ng", Role.PATIENT, patient.id),
            ):
                await provisioning.create_user(
                    database,
                    username=username,
                    display_name=username,
                    role=role,
                    password="correct horse battery staple",
                    patient_id=patient_id,
                )
        finally:
            await database.dispose()

    asyncio.run(create())


def test_an_operator_registers_a_partner_whose_token_works_until_it_is_disabled(
    cli_env: str, tmp_path: Path
) -> None:
    jwks = tmp_path / "northside.jwks.json"
    jwks.write_text(public_jwks(rsa_key(), ec_key()))
    output = run(
        "client", "register", "Northside EHR", "--jwks-file", str(jwks),
        "--scope", "system/Observation.rs system/Patient.rs",
    )  # fmt: skip
    client_id = output.splitlines()[0].strip()
    assert f"aud = {PUBLIC_BASE}/oauth/token" in output
    listed = run("client", "list")
    assert client_id in listed and "active" in listed and "Northside EHR" in listed

    with live_server(cli_env, tmp_path / "server.log") as server:
        signed = assertion(ec_key(), client_id=client_id, audience=f"{PUBLIC_BASE}/oauth/token")
        answer = httpx.post(
            f"{server.base_url}/oauth/token", data=token_form(signed, "system/*.rs")
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["scope"] == "system/Observation.rs system/Patient.rs"
        headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        fhir = f"{server.base_url}/fhir/Patient"
        assert httpx.get(fhir, headers=headers).status_code == 200

        assert run("client", "disable", client_id).strip() == "disabled"
        assert httpx.get(fhir, headers=headers).status_code == 401
        again = assertion(ec_key(), client_id=client_id, audience=f"{PUBLIC_BASE}/oauth/token")
        refused = httpx.post(f"{server.base_url}/oauth/token", data=token_form(again))
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert "disabled" in run("client", "list")


def test_client_registration_refuses_bad_keys_scopes_and_organisations(
    cli_env: str, tmp_path: Path
) -> None:
    private = tmp_path / "private.json"
    private.write_text(json.dumps({"keys": [rsa_key().as_dict(private=True)]}))
    good = tmp_path / "public.json"
    good.write_text(public_jwks(rsa_key()))
    register = ("client", "register", "Partner", "--scope")
    assert "private part" in fails(*register, "system/*.rs", "--jwks-file", str(private))
    assert "system/ scopes only" in fails(*register, "user/*.rs", "--jwks-file", str(good))
    assert "not a SMART scope" in fails(*register, "system/obs.rs", "--jwks-file", str(good))
    assert "no organisation" in fails(
        *register, "system/*.rs", "--jwks-file", str(good), "--organization", "nowhere"
    )
    fails(*register, "system/*.rs", "--jwks-file", str(tmp_path / "missing.json"), code=2)
    assert "no OAuth client" in fails("client", "disable", "no-such-client")
    assert run("client", "list").strip() == "no clients registered"


def test_user_tokens_get_only_the_scopes_their_role_may_hold(cli_env: str) -> None:
    make_accounts(cli_env)
    assert run("token", "create", "--user", "dr.li", "--scope", "user/*.rs").startswith("mmt_")
    assert run("token", "create", "--user", "li.ng", "--scope", "patient/*.rs", "--days", "30")
    create = ("token", "create", "--scope")
    assert "patient/ scopes only, not user/" in fails(*create, "user/*.rs", "--user", "li.ng")
    assert "not system/*.rs" in fails(*create, "system/*.rs", "--user", "dr.li")
    assert "need a launch patient" in fails(*create, "patient/*.rs", "--user", "dr.li")
    assert "not a SMART scope" in fails(*create, "user/Observation", "--user", "dr.li")
    assert "no user account" in fails(*create, "user/*.rs", "--user", "nobody")


def test_service_tokens_hold_system_scopes_for_an_organisation(cli_env: str) -> None:
    token = run("token", "create", "--service", "lab feed", "--scope", "system/Observation.rs")
    assert token.strip().startswith("mmt_")
    create = ("token", "create", "--scope")
    assert "system/ scopes only" in fails(*create, "user/*.rs", "--service", "lab feed")
    assert "no organisation" in fails(
        *create, "system/*.rs", "--service", "feed", "--organization", "nowhere"
    )


@pytest.mark.parametrize(
    "args",
    [
        ("--scope", "user/*.rs"),
        ("--scope", "user/*.rs", "--user", "a", "--service", "b"),
        ("--scope", "system/*.rs", "--service", "b", "--days", "3"),
        ("--scope", "user/*.rs", "--user", "a", "--organization", "default"),
        ("--user", "a"),
    ],
)
def test_token_create_needs_exactly_one_holder_and_its_own_options(
    cli_env: str, args: tuple[str, ...]
) -> None:
    fails("token", "create", *args, code=2)


def _patients_and_clinician(database_url: str) -> tuple[str, str]:
    async def create() -> tuple[str, str]:
        database = Database(database_url)
        try:
            a = await provisioning.create_patient(
                database, family="Ng", given="Li", identifier="A-1"
            )
            b = await provisioning.create_patient(
                database, family="Roe", given="Bo", identifier="B-2"
            )
            ng = await provisioning.create_user(
                database,
                username="dr.ng",
                display_name="Dr Ng",
                role=Role.CLINICIAN,
                password="correct horse battery staple",
            )
            await provisioning.add_to_care_team(database, a.id, ng.id, added_by="test")
            return a.id, b.id
        finally:
            await database.dispose()

    return asyncio.run(create())


def _read_bases(database_url: str, patient_id: str) -> set[tuple[str, str]]:
    async def read() -> set[tuple[str, str]]:
        database = Database(database_url)
        try:
            async with database.read() as conn:
                rows = await conn.execute(
                    select(audit_log.c.outcome, audit_log.c.basis).where(
                        audit_log.c.patient_id == patient_id, audit_log.c.actor_name == "Dr Ng"
                    )
                )
                return {(r.outcome, r.basis) for r in rows}
        finally:
            await database.dispose()

    return asyncio.run(read())


def test_a_clinicians_patient_scoped_token_still_needs_the_care_team_on_every_request(
    cli_env: str, tmp_path: Path
) -> None:
    a, b = _patients_and_clinician(cli_env)
    create = ("token", "create", "--user", "dr.ng", "--scope", "patient/*.rs", "--patient")
    # On A's care team only: no token for B's record.
    assert "not on the patient's care team" in fails(*create, b)
    run("care-team", "add", b, "dr.ng")
    token = run(*create, b).strip()
    headers = {"Authorization": f"Bearer {token}"}
    with live_server(cli_env, tmp_path / "server.log") as server:
        reads = (
            f"{server.base_url}/fhir/Patient/{b}",
            f"{server.base_url}/fhir/Observation?patient={b}",
            f"{server.base_url}/fhir/Patient/{b}/$everything",
        )
        for url in reads:
            assert httpx.get(url, headers=headers).status_code == 200, url
        assert ("0", "care-team") in _read_bases(cli_env, b)
        assert ("0", "self") not in _read_bases(cli_env, b)
        # Patient A is not this token's launch patient, care team or not.
        assert httpx.get(f"{server.base_url}/fhir/Patient/{a}", headers=headers).status_code == 404
        run("care-team", "remove", b, "dr.ng")
        for url in reads:
            refused = httpx.get(url, headers=headers)
            assert refused.status_code in (403, 404), url
            assert "Roe" not in refused.text
    assert ("4", "no-care-relationship") in _read_bases(cli_env, b)
