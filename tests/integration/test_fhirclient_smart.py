"""SMART's own Python client, `fhirclient`, runs the authorization-code flow against a live
medmesh server: it reads the OAuth endpoints from the CapabilityStatement, builds the
authorization URL (PKCE S256, state, aud), exchanges the code, reads the launch patient and
searches their Observations; with offline_access it refreshes its token."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from fhirclient import client as smart_client
from fhirclient.models.observation import Observation

from medmesh import provisioning
from medmesh.access.identity.principals import Role
from medmesh.store import migrate
from medmesh.store.database import Database
from tests.accounts_fixtures import csrf_of
from tests.conftest import ASSIGNED_SINCE
from tests.helpers import reading
from tests.live_server import LiveServer, free_port
from tests.smart_fixtures import handover_target

REDIRECT_URI = "http://127.0.0.1:9100/callback"
PATIENT, PASSWORD = "jane.doe", "a long walk by the river at dawn"


async def _provision(url: str) -> tuple[str, str, str]:
    database = Database(url)
    await migrate.upgrade(database)
    patient = await provisioning.create_patient(
        database, family="Doe", given="Jane", identifier="MRN-1", gender="female"
    )
    await provisioning.create_user(
        database,
        username=PATIENT,
        display_name="Jane Doe",
        role=Role.PATIENT,
        password=PASSWORD,
        patient_id=patient.id,
    )
    device = await provisioning.register_device(database, display_name="Cuff", model="BP-1")
    await provisioning.assign_device(database, device.device_id, patient.id, ASSIGNED_SINCE)
    client_id = await provisioning.register_app_client(
        database, name="fhirclient app", redirect_uris=[REDIRECT_URI], scopes="patient/*.rs"
    )
    await database.dispose()
    return patient.id, device.secret, client_id


def _person_approves(base: str, authorize_url: str) -> str:
    """The person's browser: the request, sign-in, consent; the URL the app is sent back to."""
    with httpx.Client(base_url=base) as browser:
        first = browser.get(authorize_url)
        consent_url = handover_target(first)
        browser.get(consent_url)  # not signed in: remembered, to the sign-in page
        login = browser.get("/login")
        signed = browser.post(
            "/login",
            data={"username": PATIENT, "password": PASSWORD, "csrf_token": csrf_of(login.text)},
        )
        assert signed.headers["location"] == consent_url
        consent = browser.get(consent_url)
        request_id = consent_url.rsplit("=", 1)[1]
        answered = browser.post(
            "/oauth/authorize/consent",
            data={
                "csrf_token": csrf_of(consent.text),
                "request": request_id,
                "decision": "approve",
            },
        )
        return handover_target(answered)


def test_fhirclient_runs_the_authorization_code_flow_and_reads_observations(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'medmesh.db'}"
    patient_id, device_secret, client_id = asyncio.run(_provision(url))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = LiveServer(
        url, tmp_path / "server.log", port=port, env={"MEDMESH_PUBLIC_BASE_URL": base}
    )
    server.start()
    try:
        sent = httpx.post(
            f"{base}/ingest/v1/readings",
            json={"readings": [reading("r-1", value=71), reading("r-2", value=75)]},
            headers={"Authorization": f"Bearer {device_secret}"},
        )
        assert sent.status_code == 202, sent.text
        smart = smart_client.FHIRClient(
            settings={
                "app_id": client_id,
                "api_base": f"{base}/fhir",
                "redirect_uri": REDIRECT_URI,
                "scope": "openid fhirUser offline_access patient/Observation.rs patient/Patient.rs",
            }
        )
        authorize_url = smart.authorize_url  # read from the CapabilityStatement's oauth-uris
        assert authorize_url.startswith(f"{base}/oauth/authorize?")
        assert "code_challenge_method=S256" in authorize_url
        assert "launch%2Fpatient" in authorize_url  # fhirclient asks for a patient itself

        smart.handle_callback(_person_approves(base, authorize_url))
        assert smart.ready and smart.patient_id == patient_id
        assert smart.launch_context is not None and "id_token" in smart.launch_context
        patient = smart.patient
        assert patient is not None and smart.human_name(patient.name[0]) == "Jane Doe"

        search = Observation.where(struct={"patient": patient_id})
        found = list(search.perform_resources_iter(smart.server))
        values = sorted(o.valueQuantity.value for o in found)
        assert values == [71, 75]

        before = smart.server.auth.access_token
        assert smart.reauthorize()  # the refresh token grant
        assert smart.server.auth.access_token != before
        again = list(search.perform_resources_iter(smart.server))
        assert len(again) == 2
    finally:
        server.stop()
