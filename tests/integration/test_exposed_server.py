"""What an outside caller of `medmesh serve` can and cannot learn or do (the probe of issue 16),
against the real server in a child process on both backends: no record's existence told by
a device page or a care-team Group, dates in other scripts' digits refused, no budget escaped
with X-Forwarded-For, no forged access-log line, a Secure session cookie off loopback."""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from medmesh import provisioning
from medmesh.access.identity.principals import Role
from medmesh.store.database import Database
from medmesh.web.session import SESSION_COOKIE
from tests.accounts_fixtures import make_clinician, sign_in
from tests.conftest import make_world
from tests.live_server import LiveServer, live_server


@pytest.fixture
async def server(database_url: str, tmp_path: Path) -> AsyncIterator[LiveServer]:
    with live_server(database_url, tmp_path / "server.log") as running:
        yield running


async def test_a_device_page_of_another_record_answers_like_an_unknown_device(
    server: LiveServer, database: Database
) -> None:
    a = await make_world(database, "MRN-A")
    b = await make_world(database, "MRN-B")
    ada = await make_clinician(database, "ada")
    await provisioning.add_to_care_team(database, a.patient_id, ada.user_id, added_by="test")
    async with httpx.AsyncClient(base_url=server.base_url) as browser:
        await sign_in(browser, ada)
        assert (await browser.get(f"/devices/{a.device_id}")).status_code == 200
        other = await browser.get(f"/devices/{b.device_id}")
        missing = await browser.get(f"/devices/{uuid.uuid4()}")
    assert other.status_code == missing.status_code == 404
    assert b.patient_id not in other.text
    assert f"Device/{b.device_id} is not known" in other.text

    def unnamed(page: httpx.Response) -> str:
        return re.sub(r"Device/[0-9a-f-]{36}", "Device/<id>", page.text)

    assert unnamed(other) == unnamed(missing)


async def test_dates_in_other_scripts_digits_are_refused_like_counts(
    server: LiveServer, database: Database
) -> None:
    world = await make_world(database)
    reader = httpx.AsyncClient(base_url=server.base_url, headers=world.reader_headers)
    get = reader.get
    observations = {"patient": world.patient_id}
    assert (await get("/fhir/Observation", params={**observations, "date": "2021"})).is_success
    for params, path in (
        ({**observations, "date": "٢٠٢١"}, "/fhir/Observation"),
        ({**observations, "date": "ge2021-0١-01"}, "/fhir/Observation"),
        ({"start": "٢٠٢١"}, f"/fhir/Patient/{world.patient_id}/$everything"),
        ({**observations, "_count": "١٠"}, "/fhir/Observation"),
    ):
        refused = await get(path, params=params)
        assert refused.status_code == 400, (params, refused.text)
        outcome = refused.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["diagnostics"], params
    dated = await get("/fhir/Observation", params={**observations, "date": "٢٠٢١"})
    assert "digits 0-9" in dated.json()["issue"][0]["diagnostics"]
    await reader.aclose()


async def test_a_care_team_group_of_someone_else_answers_like_an_unknown_account(
    server: LiveServer, database: Database
) -> None:
    world = await make_world(database)
    colleague = await provisioning.create_user(
        database,
        username="dr.other",
        display_name="Dr Other",
        role=Role.CLINICIAN,
        password="correct horse battery staple",
    )
    reader = httpx.AsyncClient(base_url=server.base_url, headers=world.reader_headers)
    get = reader.get
    own = await get(f"/fhir/Group/care-team-{world.clinician_id}")
    assert own.status_code == 200 and own.json()["quantity"] == 1
    existing = await get(f"/fhir/Group/care-team-{colleague.id}")
    unknown = await get(f"/fhir/Group/care-team-{uuid.uuid4()}")
    assert existing.status_code == unknown.status_code == 404
    assert existing.json() == unknown.json()
    exported = await get(
        f"/fhir/Group/care-team-{colleague.id}/$export", headers={"Prefer": "respond-async"}
    )
    assert exported.status_code == 404
    await reader.aclose()


async def _refused_with_rotating_forwarded_for(server: LiveServer) -> int:
    async with httpx.AsyncClient(base_url=server.base_url) as anonymous:
        answers = [
            await anonymous.get(
                "/fhir/metadata", headers={"X-Forwarded-For": f"203.0.113.{i % 250 + 1}"}
            )
            for i in range(75)
        ]
    return sum(a.status_code == 429 for a in answers)


async def test_rotating_forwarded_for_headers_do_not_escape_the_address_budget(
    server: LiveServer,
) -> None:
    # 60 at once, refilled at 2/s: of 75 quick requests from one address, some are refused.
    assert await _refused_with_rotating_forwarded_for(server) > 0


async def test_a_trusted_proxy_forwards_each_clients_address(
    database_url: str, tmp_path: Path
) -> None:
    env = {"MEDMESH_TRUSTED_PROXIES": "127.0.0.1"}
    with live_server(database_url, tmp_path / "proxied.log", env=env) as proxied:
        assert await _refused_with_rotating_forwarded_for(proxied) == 0
        async with httpx.AsyncClient(base_url=proxied.base_url) as via_proxy:
            one = {"X-Forwarded-For": "198.51.100.7"}
            statuses = [(await via_proxy.get("/fhir/metadata", headers=one)).status_code]
            statuses += [
                (await via_proxy.get("/fhir/metadata", headers=one)).status_code for _ in range(70)
            ]
            assert 429 in statuses  # that client's own budget ran out…
            other = await via_proxy.get(
                "/fhir/metadata", headers={"X-Forwarded-For": "198.51.100.8"}
            )
            assert other.status_code == 200  # …not the next one's


async def test_control_characters_in_a_path_cannot_forge_an_access_log_line(
    server: LiveServer, tmp_path: Path
) -> None:
    forged = "INFO medmesh.access GET /fhir/forged 200 0.1 ms"
    encoded = forged.replace(" ", "%20")
    async with httpx.AsyncClient(base_url=server.base_url) as anonymous:
        for separator in ("%0D%0A", "%0A", "%00%0A", "%E2%80%A8"):
            await anonymous.get(f"/fhir/Patient/x{separator}{encoded}")
    server.stop()  # flush and close the log
    lines = (tmp_path / "server.log").read_text(encoding="utf-8").splitlines()
    assert not [line for line in lines if line.startswith(forged)]
    logged = [line for line in lines if "medmesh.access GET /fhir/Patient/x" in line]
    assert len(logged) == 4
    assert any("x\\r\\nINFO medmesh.access" in line for line in logged)
    assert any("x\\x00\\nINFO" in line for line in logged)
    assert any("x\\u2028INFO" in line for line in logged)
    assert not any("\x00" in line or "\u2028" in line for line in lines)


def _outward_address() -> str | None:
    """An address of this machine other than loopback (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


async def test_the_session_cookie_is_secure_unless_the_server_listens_on_loopback_only(
    database_url: str, tmp_path: Path, server: LiveServer
) -> None:
    local = httpx.get(f"{server.base_url}/login")
    assert SESSION_COOKIE in local.headers["set-cookie"]
    assert "secure" not in local.headers["set-cookie"].lower()
    address = _outward_address()
    if address is None:
        pytest.skip("this machine has no address but loopback")
    with live_server(database_url, tmp_path / "outward.log", host=address) as outward:
        cookie = httpx.get(f"{outward.base_url}/login").headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    env = {"MEDMESH_SESSION_HTTPS_ONLY": "false"}  # stated explicitly: as stated
    with live_server(database_url, tmp_path / "plain.log", host=address, env=env) as plain:
        assert "secure" not in httpx.get(f"{plain.base_url}/login").headers["set-cookie"].lower()
