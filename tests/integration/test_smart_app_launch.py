"""SMART App Launch (standalone) through the real app and database on both backends: a browser
app's authorization request, the person's sign-in (with TOTP for staff) and consent, the code
exchange with PKCE, refresh token rotation, id_tokens, and every way a request can be wrong.
The person's browser is an httpx client keeping the session cookie; the app's side is
tests/smart_fixtures.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select, update
from typer.testing import CliRunner

from medmesh import provisioning
from medmesh.access.erasure import erase_patient
from medmesh.app import create_app
from medmesh.cli import app as cli_app
from medmesh.config import Settings
from medmesh.store.database import Database
from medmesh.store.oauth_clients import OAuthClients
from medmesh.store.schema import audit_log, oauth_authorization_codes, oauth_refresh_tokens
from tests.accounts_fixtures import (
    Person,
    code_for,
    make_clinician,
    make_patient_account,
    sign_in,
    submit_code,
    submit_password,
)
from tests.conftest import World, make_world
from tests.helpers import AppClient, reading
from tests.smart_fixtures import (
    APP_ORIGIN,
    FHIR_BASE,
    REDIRECT_URI,
    SmartApp,
    answer_consent,
    approve,
    handover_target,
    open_consent,
    query_of,
)

PATIENT_SCOPE = "launch/patient openid fhirUser patient/Observation.rs patient/Patient.rs"


@dataclass(frozen=True, slots=True)
class Scene:
    database: Database
    a: World  # patient A, with readings, a patient account and a care-team clinician
    b: World  # patient B: nobody here has a relationship with B
    jane: Person  # A's own account
    doctor: Person  # on A's care team, signs in with TOTP
    app: SmartApp  # a registered public app


@pytest.fixture
async def http(database_url: str) -> AsyncIterator[AppClient]:
    settings = Settings(
        database_url=database_url, auto_migrate=False, alert_check_interval_seconds=0
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app), AppClient(app) as h:
        yield h


@pytest.fixture
async def scene(database: Database, http: AppClient) -> Scene:
    a = await make_world(database, "MRN-A")
    b = await make_world(database, "MRN-B")
    for world, value in ((a, 71), (b, 4000)):
        response = await http.post(
            "/ingest/v1/readings",
            json={"readings": [reading(f"r-{value}", value=value if value < 300 else 99)]},
            headers=world.device_headers,
        )
        assert response.status_code == 202, response.text
    await http.settled()
    jane = await make_patient_account(database, a.patient_id)
    doctor = await make_clinician(database, "dr.smart", "Dr Smart")
    await provisioning.add_to_care_team(database, a.patient_id, doctor.user_id, added_by="test")
    client_id = await provisioning.register_app_client(
        database,
        name="Vitals Viewer",
        redirect_uris=[REDIRECT_URI],
        scopes="patient/*.rs user/*.rs",
    )
    return Scene(database, a, b, jane, doctor, SmartApp(client_id))


async def _sign_in_patient(http: httpx.AsyncClient, scene: Scene) -> None:
    await sign_in(http, scene.jane)


async def _token(http: httpx.AsyncClient, form: dict[str, str]) -> httpx.Response:
    return await http.post("/oauth/token", data=form)


def _oauth_error(response: httpx.Response, status: int, error: str, words: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error and words in body["error_description"], body
    assert "access_token" not in body


async def _bearer_get(http: httpx.AsyncClient, path: str, token: str) -> httpx.Response:
    return await http.get(path, headers={"Authorization": f"Bearer {token}"})


async def test_a_patient_signs_in_consents_and_the_app_reads_their_observations(
    http: AppClient, scene: Scene
) -> None:
    app = scene.app
    first = await http.get(app.authorize_url(PATIENT_SCOPE + " offline_access", nonce="n-1"))
    assert first.status_code == 200 and "set-cookie" not in first.headers
    consent_url = handover_target(first)
    # Not signed in: the sign-in page, and after it back to the app's request.
    to_login = await http.get(consent_url)
    assert (to_login.status_code, to_login.headers["location"]) == (303, "/login")
    signed = await submit_password(http, scene.jane.username, scene.jane.password)
    assert signed.headers["location"] == consent_url
    consent = await http.get(consent_url)
    assert consent.status_code == 200
    text = consent.text
    assert "Vitals Viewer" in text and "Open your own record" in text
    assert "See your measurements and test results" in text
    assert "Keep its access after you close it" in text

    answered = await answer_consent(http, consent, "approve")
    back = query_of(handover_target(answered))
    assert back["state"] == app.state and set(back) == {"code", "state"}

    issued = await _token(http, app.token_form(back["code"]))
    assert issued.status_code == 200, issued.text
    assert issued.headers["cache-control"] == "no-store"
    tokens = issued.json()
    assert tokens["token_type"] == "Bearer" and tokens["patient"] == scene.a.patient_id
    assert set(tokens["scope"].split()) == set(PATIENT_SCOPE.split()) | {"offline_access"}
    assert tokens["refresh_token"] and tokens["expires_in"] == 900

    keys = KeySet.import_key_set((await http.get("/oauth/jwks")).json())
    claims = jwt.decode(tokens["id_token"], keys, algorithms=["RS256"]).claims
    assert claims["iss"] == FHIR_BASE and claims["aud"] == app.client_id
    assert claims["sub"] == scene.jane.user_id and claims["nonce"] == "n-1"
    assert claims["fhirUser"] == f"{FHIR_BASE}/Patient/{scene.a.patient_id}"

    token = tokens["access_token"]
    mine = await _bearer_get(http, f"/fhir/Observation?patient={scene.a.patient_id}", token)
    assert mine.status_code == 200 and len(mine.json()["entry"]) == 1
    assert "71" in mine.text
    theirs = await _bearer_get(http, f"/fhir/Observation?patient={scene.b.patient_id}", token)
    assert theirs.status_code == 403
    # Devices are not in the granted scopes: the policy refuses them like any token's.
    devices = await _bearer_get(http, f"/fhir/Device?patient={scene.a.patient_id}", token)
    assert devices.status_code == 403
    async with scene.database.read() as conn:
        rows = (
            await conn.execute(
                select(audit_log.c.subtype, audit_log.c.actor_id, audit_log.c.patient_id).where(
                    audit_log.c.basis == f"app:{app.client_id}"
                )
            )
        ).all()
    # The request (by the app), the approval and the code exchange (by Jane, for her record).
    assert [tuple(r) for r in rows] == [
        ("smart-request", app.client_id, None),
        ("smart-authorize", scene.jane.user_id, scene.a.patient_id),
        ("smart-code", scene.jane.user_id, scene.a.patient_id),
    ]


async def test_a_clinician_signs_in_with_totp_and_picks_only_a_patient_they_may_see(
    http: AppClient, scene: Scene
) -> None:
    app = scene.app
    first = await http.get(app.authorize_url(PATIENT_SCOPE))
    consent_url = handover_target(first)
    await http.get(consent_url)  # remembers where to return after sign-in
    password = await submit_password(http, scene.doctor.username, scene.doctor.password)
    assert password.headers["location"] == "/login/code"  # staff: the second factor first
    code = await submit_code(http, code_for(scene.doctor))
    assert code.headers["location"] == consent_url
    consent = await http.get(consent_url)
    assert scene.a.patient_id in consent.text and scene.b.patient_id not in consent.text
    assert "Doe, Jane" in consent.text
    # A patient outside their care team, forged into the form: refused, audited, no code.
    forged = await answer_consent(http, consent, "approve", patient=scene.b.patient_id)
    assert forged.status_code == 400 and "Choose one of the patients" in forged.text
    async with scene.database.read() as conn:
        refused = (
            (
                await conn.execute(
                    select(audit_log.c.outcome).where(
                        audit_log.c.subtype == "smart-authorize",
                        audit_log.c.patient_id == scene.b.patient_id,
                    )
                )
            )
            .scalars()
            .all()
        )
        codes = (await conn.execute(select(oauth_authorization_codes.c.code_hash))).all()
    assert refused == ["4"] and codes == []

    answered = await answer_consent(http, forged, "approve", patient=scene.a.patient_id)
    back = query_of(handover_target(answered))
    tokens = (await _token(http, app.token_form(back["code"]))).json()
    assert tokens["patient"] == scene.a.patient_id
    assert "id_token" in tokens and "refresh_token" not in tokens
    token = tokens["access_token"]
    ok = await _bearer_get(http, f"/fhir/Observation?patient={scene.a.patient_id}", token)
    assert ok.status_code == 200 and len(ok.json()["entry"]) == 1
    other = await _bearer_get(http, f"/fhir/Observation?patient={scene.b.patient_id}", token)
    assert other.status_code == 403


async def test_denying_sends_access_denied_back_and_grants_nothing(
    http: AppClient, scene: Scene
) -> None:
    await _sign_in_patient(http, scene)
    consent = await open_consent(http, scene.app, PATIENT_SCOPE)
    answered = await answer_consent(http, consent, "deny")
    back = query_of(handover_target(answered))
    assert back["error"] == "access_denied" and back["state"] == scene.app.state
    assert "code" not in back
    again = await answer_consent(http, consent, "approve")  # the request was answered
    assert again.status_code == 404
    async with scene.database.read() as conn:
        assert (await conn.execute(select(oauth_authorization_codes))).all() == []
        denied = (
            (
                await conn.execute(
                    select(audit_log.c.outcome).where(audit_log.c.subtype == "smart-deny")
                )
            )
            .scalars()
            .all()
        )
    assert denied == ["4"]


async def test_the_consent_form_needs_the_sessions_csrf_token(
    http: AppClient, scene: Scene
) -> None:
    await _sign_in_patient(http, scene)
    consent = await open_consent(http, scene.app, PATIENT_SCOPE)
    forged = await http.post(
        "/oauth/authorize/consent",
        data={"csrf_token": "forged", "request": "x", "decision": "approve"},
    )
    assert forged.status_code == 403 and "Form expired" in forged.text
    assert consent.status_code == 200
    async with scene.database.read() as conn:
        assert (await conn.execute(select(oauth_authorization_codes))).all() == []


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"client_id": "no-such-app"}, "not registered"),
        ({"client_id": None}, "no client_id"),
        ({"redirect_uri": "http://127.0.0.1:9100/elsewhere"}, "redirect_uri"),
        ({"redirect_uri": REDIRECT_URI + "/"}, "redirect_uri"),  # exact match only
    ],
)
async def test_a_request_that_cannot_go_back_to_the_app_is_told_to_the_person(
    http: AppClient, scene: Scene, changes: dict[str, str | None], words: str
) -> None:
    response = await http.get(scene.app.authorize_url(PATIENT_SCOPE, **changes))
    assert response.status_code == 400 and "location" not in response.headers
    assert words in response.text and "nothing was shared" in response.text


@pytest.mark.parametrize(
    ("changes", "error", "words"),
    [
        ({"code_challenge": None}, "invalid_request", "code_challenge"),
        ({"code_challenge_method": None}, "invalid_request", "PKCE is required"),
        ({"code_challenge_method": "plain"}, "invalid_request", "PKCE is required"),
        ({"code_challenge": "short"}, "invalid_request", "code_challenge"),
        ({"aud": "https://elsewhere.example/fhir"}, "invalid_request", "aud must be"),
        ({"aud": None}, "invalid_request", "aud must be"),
        ({"response_type": "token"}, "unsupported_response_type", "code"),
        ({"launch": "xyz"}, "invalid_request", "EHR launch"),
        ({"scope": "patient/Observation.fly"}, "invalid_scope", "interactions"),
        ({"scope": None}, "invalid_scope", "scope is required"),
    ],
)
async def test_a_bad_authorization_request_goes_back_to_the_app_with_its_error(
    http: AppClient, scene: Scene, changes: dict[str, str | None], error: str, words: str
) -> None:
    response = await http.get(scene.app.authorize_url(PATIENT_SCOPE, **changes))
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    back = query_of(location)
    assert back["error"] == error and words in back["error_description"], back
    assert back["state"] == scene.app.state


async def test_a_request_without_state_is_refused_without_state(
    http: AppClient, scene: Scene
) -> None:
    response = await http.get(scene.app.authorize_url(PATIENT_SCOPE, state=None))
    back = query_of(response.headers["location"])
    assert back["error"] == "invalid_request" and "state" not in back


async def test_a_code_is_single_use_and_bound_to_client_redirect_uri_and_verifier(
    http: AppClient, scene: Scene
) -> None:
    app = scene.app
    await _sign_in_patient(http, scene)
    other_id = await provisioning.register_app_client(
        scene.database, name="Other App", redirect_uris=[REDIRECT_URI], scopes="patient/*.rs"
    )
    for changes, status, error, words in (
        ({"code_verifier": None}, 400, "invalid_request", "code_verifier is required"),
        ({"client_id": "no-such-app"}, 401, "invalid_client", "unknown"),
        ({"client_id": other_id}, 400, "invalid_grant", "another client"),
        ({"redirect_uri": REDIRECT_URI + "?x=1"}, 400, "invalid_grant", "redirect_uri"),
        ({"code_verifier": "x" * 60}, 400, "invalid_grant", "code_verifier does not match"),
    ):
        back = await approve(http, app, PATIENT_SCOPE)
        wrong = await _token(http, app.token_form(back["code"], **changes))
        _oauth_error(wrong, status, error, words)
        if error == "invalid_grant":  # the code is spent: the right request fails too
            right = await _token(http, app.token_form(back["code"]))
            _oauth_error(right, 400, "invalid_grant", "used before")

    back = await approve(http, app, PATIENT_SCOPE)
    first = await _token(http, app.token_form(back["code"]))
    assert first.status_code == 200
    token = first.json()["access_token"]
    path = f"/fhir/Observation?patient={scene.a.patient_id}"
    assert (await _bearer_get(http, path, token)).status_code == 200
    replay = await _token(http, app.token_form(back["code"]))
    _oauth_error(replay, 400, "invalid_grant", "used before")
    # A replayed code means it leaked: what was issued for it is revoked.
    assert (await _bearer_get(http, path, token)).status_code == 401
    _oauth_error(await _token(http, app.token_form("made-up")), 400, "invalid_grant", "unknown")


async def test_an_expired_code_is_refused(http: AppClient, scene: Scene) -> None:
    await _sign_in_patient(http, scene)
    back = await approve(http, scene.app, PATIENT_SCOPE)
    async with scene.database.write() as conn:
        await conn.execute(
            update(oauth_authorization_codes).values(
                expires_at=datetime.now(UTC) - timedelta(seconds=1)
            )
        )
    response = await _token(http, scene.app.token_form(back["code"]))
    _oauth_error(response, 400, "invalid_grant", "expired")


async def test_refresh_tokens_rotate_and_a_reused_one_ends_the_grant(
    http: AppClient, scene: Scene
) -> None:
    app = scene.app
    await _sign_in_patient(http, scene)
    back = await approve(http, app, PATIENT_SCOPE + " offline_access")
    first = (await _token(http, app.token_form(back["code"]))).json()
    refresh = {"grant_type": "refresh_token", "client_id": app.client_id}

    second = await _token(http, {**refresh, "refresh_token": first["refresh_token"]})
    assert second.status_code == 200, second.text
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert rotated["patient"] == scene.a.patient_id
    path = f"/fhir/Observation?patient={scene.a.patient_id}"
    assert (await _bearer_get(http, path, rotated["access_token"])).status_code == 200

    narrowed = await _token(
        http,
        {**refresh, "refresh_token": rotated["refresh_token"], "scope": "patient/Patient.rs"},
    )
    assert narrowed.json()["scope"] == "patient/Patient.rs"
    assert (await _bearer_get(http, path, narrowed.json()["access_token"])).status_code == 403
    latest = narrowed.json()["refresh_token"]
    wider = await _token(http, {**refresh, "refresh_token": latest, "scope": "patient/Device.rs"})
    _oauth_error(wider, 400, "invalid_scope", "cannot add scopes")

    # The first refresh token again: stolen, say. The whole grant ends, the newest included.
    reused = await _token(http, {**refresh, "refresh_token": first["refresh_token"]})
    _oauth_error(reused, 400, "invalid_grant", "used before")
    _oauth_error(
        await _token(http, {**refresh, "refresh_token": latest}), 400, "invalid_grant", "revoked"
    )
    assert (await _bearer_get(http, path, rotated["access_token"])).status_code == 401
    other_client = await _token(
        http, {**refresh, "refresh_token": latest, "client_id": "no-such-app"}
    )
    _oauth_error(other_client, 401, "invalid_client")


async def test_an_expired_refresh_token_is_refused_and_revocation_ends_a_grant(
    http: AppClient, scene: Scene
) -> None:
    app = scene.app
    await _sign_in_patient(http, scene)
    refresh = {"grant_type": "refresh_token", "client_id": app.client_id}
    back = await approve(http, app, PATIENT_SCOPE + " online_access")
    online = (await _token(http, app.token_form(back["code"]))).json()
    async with scene.database.write() as conn:
        await conn.execute(
            update(oauth_refresh_tokens).values(expires_at=datetime.now(UTC) - timedelta(1))
        )
    expired = await _token(http, {**refresh, "refresh_token": online["refresh_token"]})
    _oauth_error(expired, 400, "invalid_grant", "expired")

    back = await approve(http, app, PATIENT_SCOPE + " offline_access")
    offline = (await _token(http, app.token_form(back["code"]))).json()
    revoked = await http.post(
        "/oauth/revoke", data={"token": offline["refresh_token"], "client_id": app.client_id}
    )
    assert revoked.status_code == 200
    again = await _token(http, {**refresh, "refresh_token": offline["refresh_token"]})
    _oauth_error(again, 400, "invalid_grant", "revoked")
    path = f"/fhir/Patient/{scene.a.patient_id}"
    assert (await _bearer_get(http, path, offline["access_token"])).status_code == 401


async def test_scopes_the_account_may_not_hold_are_left_out_and_shown(
    http: AppClient, scene: Scene
) -> None:
    await _sign_in_patient(http, scene)
    scope = "launch/patient patient/Observation.rs user/*.rs system/*.rs"
    consent = await open_consent(http, scene.app, scope)
    assert "Not allowed for your account" in consent.text
    assert "user/*.rs" in consent.text and "system/*.rs" in consent.text
    answered = await answer_consent(http, consent, "approve")
    back = query_of(handover_target(answered))
    tokens = (await _token(http, scene.app.token_form(back["code"]))).json()
    assert tokens["scope"] == "launch/patient patient/Observation.rs"

    # Nothing left that a patient may hold: invalid_scope back to the app, no consent shown.
    first = await http.get(scene.app.authorize_url("user/*.rs"))
    refused = await http.get(handover_target(first))
    back = query_of(handover_target(refused))
    assert back["error"] == "invalid_scope" and back["state"] == scene.app.state


async def test_a_disabled_app_gets_nothing_and_its_tokens_stop(
    http: AppClient, scene: Scene
) -> None:
    await _sign_in_patient(http, scene)
    back = await approve(http, scene.app, PATIENT_SCOPE)
    token = (await _token(http, scene.app.token_form(back["code"]))).json()["access_token"]
    path = f"/fhir/Patient/{scene.a.patient_id}"
    assert (await _bearer_get(http, path, token)).status_code == 200
    await provisioning.set_client_disabled(scene.database, scene.app.client_id, True)
    assert (await _bearer_get(http, path, token)).status_code == 401
    response = await http.get(scene.app.authorize_url(PATIENT_SCOPE))
    assert response.status_code == 400


async def test_discovery_lists_what_is_built(http: AppClient) -> None:
    config = (await http.get("/fhir/.well-known/smart-configuration")).json()
    assert config["authorization_endpoint"] == "http://127.0.0.1:8000/oauth/authorize"
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert {
        "launch-standalone",
        "client-public",
        "context-standalone-patient",
        "sso-openid-connect",
        "permission-v2",
        "permission-offline",
    } <= set(config["capabilities"])
    # Not built, so not claimed.
    assert not {"launch-ehr", "client-confidential-symmetric", "context-ehr-patient"} & set(
        config["capabilities"]
    )
    openid = (await http.get("/fhir/.well-known/openid-configuration")).json()
    assert openid["issuer"] == FHIR_BASE
    assert openid["id_token_signing_alg_values_supported"] == ["RS256"]
    jwks = (await http.get("/oauth/jwks")).json()
    assert [k["alg"] for k in jwks["keys"]] == ["RS256"]
    assert all("d" not in k for k in jwks["keys"])


async def test_cors_answers_registered_app_origins_only(http: AppClient, scene: Scene) -> None:
    preflight = {
        "Origin": APP_ORIGIN,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    for path in ("/fhir/Observation", "/oauth/token", "/.well-known/smart-configuration"):
        answer = await http.options(path, headers=preflight)
        assert answer.status_code == 204, path
        assert answer.headers["access-control-allow-origin"] == APP_ORIGIN
        assert "Authorization" in answer.headers["access-control-allow-headers"]
        stranger = await http.options(path, headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in stranger.headers, path
    actual = await http.get("/fhir/metadata", headers={"Origin": APP_ORIGIN})
    assert actual.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "Origin" in actual.headers["vary"]
    token_error = await http.post(
        "/oauth/token", data={"grant_type": "password"}, headers={"Origin": APP_ORIGIN}
    )
    assert token_error.headers["access-control-allow-origin"] == APP_ORIGIN
    for origin in ("https://evil.example", "http://127.0.0.1:9101", APP_ORIGIN + "/"):
        other = await http.get("/fhir/metadata", headers={"Origin": origin})
        assert "access-control-allow-origin" not in other.headers, origin
    # The dashboard is never opened to other origins.
    page = await http.get("/login", headers={"Origin": APP_ORIGIN})
    assert "access-control-allow-origin" not in page.headers
    await provisioning.set_client_disabled(scene.database, scene.app.client_id, True)
    gone = await http.get("/fhir/metadata", headers={"Origin": APP_ORIGIN})
    assert "access-control-allow-origin" not in gone.headers


async def test_erasure_takes_the_patients_codes_and_refresh_tokens(
    http: AppClient, scene: Scene
) -> None:
    await _sign_in_patient(http, scene)
    back = await approve(http, scene.app, PATIENT_SCOPE + " offline_access")
    await _token(http, scene.app.token_form(back["code"]))
    await approve(http, scene.app, PATIENT_SCOPE)  # a code not exchanged
    async with scene.database.read() as conn:
        assert len((await conn.execute(select(oauth_refresh_tokens))).all()) == 1
        assert len((await conn.execute(select(oauth_authorization_codes))).all()) == 2
    certificate = await erase_patient(
        scene.database, scene.a.patient_id, reason="patient's request", requested_by="dpo"
    )
    deleted = certificate.document["rows_deleted"]
    assert isinstance(deleted, dict)
    assert deleted["oauth_refresh_tokens"] == 1 and deleted["oauth_authorization_codes"] == 2
    async with scene.database.read() as conn:
        assert (await conn.execute(select(oauth_refresh_tokens))).all() == []
        assert (await conn.execute(select(oauth_authorization_codes))).all() == []


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli_app, list(args))
    return result.exit_code, result.output


async def test_the_operator_registers_a_public_app_with_its_redirect_uris_and_origins(
    database_url: str, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDMESH_DATABASE_URL", database_url)
    code, output = await asyncio.to_thread(
        _cli,
        "client", "register", "Vitals Viewer", "--public",
        "--redirect-uri", "https://viewer.example.org/callback",
        "--redirect-uri", "http://127.0.0.1:9100/callback",
        "--origin", "https://viewer.example.org",
        "--scope", "patient/*.rs user/Observation.rs",
    )  # fmt: skip
    assert code == 0, output
    client_id = output.splitlines()[0]
    assert "iss (aud) = http://127.0.0.1:8000/fhir" in output
    async with database.read() as conn:
        client = await OAuthClients(conn).get(client_id)
        assert await OAuthClients(conn).origin_registered("https://viewer.example.org")
        assert not await OAuthClients(conn).origin_registered("http://127.0.0.1:9100")
    assert client is not None and client.kind == "public"
    assert client.redirect_uris == (
        "https://viewer.example.org/callback",
        "http://127.0.0.1:9100/callback",
    )
    code, listed = await asyncio.to_thread(_cli, "client", "list")
    assert f"{client_id}  active    public" in listed and "viewer.example.org/callback" in listed

    for args, words in (
        (("--public", "--scope", "patient/*.rs"), "at least one --redirect-uri"),
        (
            ("--public", "--scope", "patient/*.rs", "--redirect-uri", "http://app.example/cb"),
            "must use https",
        ),
        (
            ("--public", "--scope", "patient/*.rs", "--redirect-uri", "https://a.example/#x"),
            "without a #fragment",
        ),
        (
            ("--public", "--scope", "system/*.rs", "--redirect-uri", "https://a.example/cb"),
            "system/*.rs",
        ),
        (("--scope", "patient/*.rs"), "--jwks-file for a backend service"),
    ):
        code, output = await asyncio.to_thread(_cli, "client", "register", "Bad", *args)
        assert code != 0 and words in output, (args, output)
