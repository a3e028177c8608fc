"""The admin commands a newcomer uses to send a first reading."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from medmesh import provisioning
from medmesh.access.identity.principals import Role
from medmesh.cli import app
from medmesh.store.database import Database
from tests.helpers import reading
from tests.live_server import live_server


@pytest.fixture
def cli_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MEDMESH_DATABASE_URL", database_url)
    return database_url


def _clinician_account(database_url: str, username: str) -> None:
    """A clinician account (made through admin: account commands are not this module's)."""

    async def create() -> None:
        database = Database(database_url)
        try:
            await provisioning.create_user(
                database,
                username=username,
                display_name=f"Dr {username}",
                role=Role.CLINICIAN,
                password="correct horse battery staple",
            )
        finally:
            await database.dispose()

    asyncio.run(create())


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_a_newcomer_can_provision_and_send_a_first_reading(cli_env: str, tmp_path: Path) -> None:
    patient_id = _run(
        "patient",
        "create",
        "--family",
        "Okafor",
        "--given",
        "Ada",
        "--identifier",
        "MRN-77",
        "--birth-date",
        "1958-03-14",
        "--gender",
        "female",
    ).strip()
    registered = _run("device", "register", "--name", "Home BP cuff", "--model", "BP-2")
    device_id = re.search(r"device id:\s+(\S+)", registered).group(1)  # type: ignore[union-attr]
    secret = re.search(r"device secret:\s+(\S+)", registered).group(1)  # type: ignore[union-attr]
    _run("device", "assign", device_id, patient_id, "--start", "2026-01-01T00:00:00")
    _clinician_account(cli_env, "drwho")
    _run("care-team", "add", patient_id, "drwho", "--role", "primary")
    token = _run("token", "create", "--user", "drwho", "--scope", "user/*.rs").strip()
    assert token.startswith("mmt_") and secret.startswith("mmd_")

    with live_server(cli_env, tmp_path / "server.log") as server:
        sent = httpx.post(
            f"{server.base_url}/ingest/v1/readings",
            json={"readings": [reading("first")]},
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert sent.status_code == 202 and sent.json()["accepted"] == 1
        found = httpx.get(
            f"{server.base_url}/fhir/Observation",
            params={"patient": patient_id},
            headers={"Authorization": f"Bearer {token}"},
        ).json()
    assert [e["resource"]["valueQuantity"]["value"] for e in found["entry"]] == [72]


def test_cli_errors_are_clear_and_exit_non_zero(cli_env: str) -> None:
    runner = CliRunner()
    _run("patient", "create", "--family", "A", "--given", "B", "--identifier", "DUP")
    duplicate = runner.invoke(
        app, ["patient", "create", "--family", "A", "--given", "B", "--identifier", "DUP"]
    )
    assert duplicate.exit_code == 1
    assert "already exists" in duplicate.output
    unknown = runner.invoke(app, ["device", "assign", "no-such-device", "no-such-patient"])
    assert unknown.exit_code == 1
    assert "not found" in unknown.output
    bad_date = runner.invoke(
        app,
        [
            "patient",
            "create",
            "--family",
            "A",
            "--given",
            "B",
            "--identifier",
            "X",
            "--birth-date",
            "14/03/1958",
        ],
    )
    assert bad_date.exit_code == 2


def test_a_revoked_token_stops_working(cli_env: str, tmp_path: Path) -> None:
    _clinician_account(cli_env, "drgone")
    token = _run("token", "create", "--user", "drgone", "--scope", "user/*.rs").strip()
    with live_server(cli_env, tmp_path / "server.log") as server:
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{server.base_url}/fhir/Patient", headers=headers).status_code == 200
        assert _run("token", "revoke", token).strip() == "revoked"
        assert httpx.get(f"{server.base_url}/fhir/Patient", headers=headers).status_code == 401
    again = CliRunner().invoke(app, ["token", "revoke", token])
    assert again.exit_code == 1
