"""SMART Backend Services end to end: a partner's system registered with its public keys signs
client assertions (RS384 and ES384, real keys) and trades them at POST /oauth/token, through
the real app, on both backends.

No SMART/OAuth client library is installed (authlib is not a dependency): the partner signs
with joserfc and posts with httpx, see tests/oauth_fixtures.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey

from medmesh import provisioning
from medmesh.access.identity.bearer import principal_for_token
from medmesh.access.identity.principals import ActorKind, Principal, Role
from medmesh.access.policy.scopes import Scopes
from medmesh.app import create_app
from medmesh.config import Settings
from medmesh.store.database import Database
from medmesh.store.users import Organizations
from tests.oauth_fixtures import (
    Partner,
    assertion,
    ec_key,
    key_for,
    public_jwks,
    rsa_key,
    token_form,
)

PUBLIC_BASE = "https://medmesh.example"
TOKEN_URL = f"{PUBLIC_BASE}/oauth/token"
CEILING = "system/Observation.rs system/Patient.rs"


@pytest.fixture
async def http(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The real app in-process, configured with the public URL clients know it by."""
    settings = Settings(database_url=database_url, auto_migrate=False, public_base_url=PUBLIC_BASE)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC_BASE) as client,
    ):
        yield client


async def register(database: Database, alg: str = "RS384", **options: Any) -> Partner:
    async with database.write() as conn:
        await Organizations(conn).add("north", "Northside Clinic")
    client_id = await provisioning.register_client(
        database,
        name="Northside EHR",
        jwks=public_jwks(rsa_key(), ec_key()),
        scopes=options.get("scopes", CEILING),
        organization_id="north",
    )
    return Partner(client_id, key_for(alg))


async def ask(
    http: httpx.AsyncClient, partner: Partner, scope: str = "system/Observation.rs", **kw: Any
) -> httpx.Response:
    signed = assertion(partner.key, client_id=partner.client_id, audience=TOKEN_URL, **kw)
    return await http.post("/oauth/token", data=token_form(signed, scope))


def refused(response: httpx.Response, status: int, error: str, words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error and words in body["error_description"], body
    assert response.headers["cache-control"] == "no-store"


async def resolve(database: Database, token: str, now: datetime) -> Principal | None:
    async with database.read() as conn:
        return await principal_for_token(conn, token, now=now)


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
async def test_a_partner_gets_a_five_minute_token_for_its_organisation(
    http: httpx.AsyncClient, database: Database, alg: str
) -> None:
    partner = await register(database, alg)
    asked = datetime.now(UTC)
    response = await ask(http, partner, "system/Observation.rs")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 300
    assert body["scope"] == "system/Observation.rs"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"

    principal = await resolve(database, body["access_token"], asked + timedelta(minutes=4))
    assert principal is not None
    assert (principal.kind, principal.id, principal.name) == (
        ActorKind.CLIENT,
        partner.client_id,
        "Northside EHR",
    )
    assert principal.role is Role.SYSTEM and principal.organization_id == "north"
    assert principal.scopes == Scopes.parse("system/Observation.rs")
    later = asked + timedelta(minutes=5, seconds=30)
    assert await resolve(database, body["access_token"], later) is None


async def test_the_granted_scopes_are_narrowed_to_what_the_client_was_registered_for(
    http: httpx.AsyncClient, database: Database
) -> None:
    partner = await register(database)
    response = await ask(http, partner, "system/*.cruds system/Device.rs")
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "system/Observation.rs system/Patient.rs"
    principal = await resolve(database, response.json()["access_token"], datetime.now(UTC))
    assert principal is not None
    assert principal.scopes == Scopes.parse("system/Observation.rs system/Patient.rs")


@pytest.mark.parametrize(
    ("scope", "words"),
    [
        ("system/Device.rs", "none of the requested scopes is within"),
        ("patient/Observation.rs", "system/ scopes only"),
        ("system/observation.rs", "not a SMART scope"),
    ],
)
async def test_a_request_for_nothing_the_client_may_have_is_invalid_scope(
    http: httpx.AsyncClient, database: Database, scope: str, words: str
) -> None:
    refused(await ask(http, await register(database), scope), 400, "invalid_scope", words)


async def test_an_assertion_signed_with_a_key_that_was_not_registered_is_refused(
    http: httpx.AsyncClient, database: Database
) -> None:
    partner = await register(database)
    stolen_kid = RSAKey.generate_key(2048, {"kid": rsa_key().kid})
    signed = assertion(stolen_kid, client_id=partner.client_id, audience=TOKEN_URL)
    response = await http.post("/oauth/token", data=token_form(signed))
    refused(response, 401, "invalid_client", "signature does not verify")
    assert signed not in response.text and signed.split(".")[2] not in response.text


@pytest.mark.parametrize(
    ("claims", "words"),
    [
        ({"aud": "http://127.0.0.1:8000/oauth/token"}, "aud must be this token endpoint"),
        ({"aud": f"{PUBLIC_BASE}/fhir"}, "aud must be this token endpoint"),
        ({"lifetime": timedelta(minutes=-2)}, "has expired"),
        ({"lifetime": timedelta(minutes=15)}, "more than five minutes ahead"),
        ({"omit": ("jti",)}, "lacks the claim(s) jti"),
        ({"sub": "someone-else"}, "iss and sub must both be the client_id"),
    ],
)
async def test_an_assertion_with_wrong_claims_is_refused_as_invalid_client(
    http: httpx.AsyncClient, database: Database, claims: dict[str, Any], words: str
) -> None:
    refused(await ask(http, await register(database), **claims), 401, "invalid_client", words)


async def test_a_replayed_assertion_is_refused(http: httpx.AsyncClient, database: Database) -> None:
    partner = await register(database, "ES384")
    signed = assertion(partner.key, client_id=partner.client_id, audience=TOKEN_URL, jti="once")
    assert (await http.post("/oauth/token", data=token_form(signed))).status_code == 200
    again = await http.post("/oauth/token", data=token_form(signed))
    refused(again, 401, "invalid_client", "used before")
    # The jti is the client's: another assertion with a fresh jti works.
    assert (await ask(http, partner)).status_code == 200


@pytest.mark.parametrize("alg", ["none", "HS256", "RS256"])
async def test_an_assertion_not_signed_with_rs384_or_es384_is_refused(
    http: httpx.AsyncClient, database: Database, alg: str
) -> None:
    partner = await register(database)
    signed = assertion(rsa_key(), client_id=partner.client_id, audience=TOKEN_URL)
    _, claims, _ = signed.split(".")
    forged_header = base64.urlsafe_b64encode(
        json.dumps({"alg": alg, "typ": "JWT", "kid": rsa_key().kid}).encode()
    ).rstrip(b"=")
    forged = f"{forged_header.decode()}.{claims}." + ("" if alg == "none" else "c2ln")
    response = await http.post("/oauth/token", data=token_form(forged))
    refused(response, 401, "invalid_client", "signed with RS384 or ES384")


async def test_an_unknown_client_is_refused(http: httpx.AsyncClient, database: Database) -> None:
    await register(database)
    stranger = Partner("00000000-0000-4000-8000-00000000dead", rsa_key())
    refused(await ask(http, stranger), 401, "invalid_client", "unknown client_id")


async def test_a_disabled_client_gets_no_token_and_its_tokens_stop_working(
    http: httpx.AsyncClient, database: Database
) -> None:
    partner = await register(database)
    issued = await ask(http, partner)
    token = issued.json()["access_token"]
    await provisioning.set_client_disabled(database, partner.client_id, True)
    refused(await ask(http, partner), 401, "invalid_client", "disabled")
    assert await resolve(database, token, datetime.now(UTC)) is None
    await provisioning.set_client_disabled(database, partner.client_id, False)
    assert await resolve(database, token, datetime.now(UTC)) is not None


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"grant_type": None}, 400, "invalid_request"),
        ({"scope": None}, 400, "invalid_request"),
        ({"client_assertion": None}, 401, "invalid_client"),
        ({"client_assertion_type": "urn:example:other"}, 401, "invalid_client"),
        ({"client_id": "not-the-issuer"}, 401, "invalid_client"),
    ],
)
async def test_a_malformed_token_request_gets_the_rfc_6749_error(
    http: httpx.AsyncClient,
    database: Database,
    change: dict[str, str | None],
    status: int,
    error: str,
) -> None:
    partner = await register(database)
    signed = assertion(partner.key, client_id=partner.client_id, audience=TOKEN_URL)
    form = {**token_form(signed), **change}
    response = await http.post(
        "/oauth/token", data={k: v for k, v in form.items() if v is not None}
    )
    refused(response, status, error, "")


async def test_a_token_request_must_be_a_form_with_each_parameter_once(
    http: httpx.AsyncClient, database: Database
) -> None:
    partner = await register(database)
    signed = assertion(partner.key, client_id=partner.client_id, audience=TOKEN_URL)
    as_json = await http.post("/oauth/token", json=token_form(signed))
    refused(as_json, 400, "invalid_request", "application/x-www-form-urlencoded")
    twice = httpx.QueryParams([*token_form(signed).items(), ("scope", "system/Patient.rs")])
    doubled = await http.post(
        "/oauth/token",
        content=str(twice),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    refused(doubled, 400, "invalid_request", "scope is given more than once")
    huge = await http.post("/oauth/token", data={"client_assertion": "x" * 20_000})
    refused(huge, 400, "invalid_request", "larger than")


@pytest.mark.parametrize(
    "path", ["/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"]
)
async def test_smart_discovery_names_the_token_endpoint_and_what_it_accepts(
    http: httpx.AsyncClient, path: str
) -> None:
    response = await http.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    config = response.json()
    assert config["token_endpoint"] == TOKEN_URL
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt", "none"]
    assert config["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert config["grant_types_supported"] == [
        "authorization_code",
        "client_credentials",
        "refresh_token",
    ]
    assert "system/*.rs" in config["scopes_supported"]
    assert {"client-confidential-asymmetric", "permission-v2"} <= set(config["capabilities"])


async def test_the_capability_statement_carries_the_smart_oauth_uris(
    http: httpx.AsyncClient,
) -> None:
    statement = (await http.get("/fhir/metadata")).json()
    security = statement["rest"][0]["security"]
    (oauth_uris,) = security["extension"]
    assert oauth_uris["url"].endswith("/StructureDefinition/oauth-uris")
    assert oauth_uris["extension"] == [
        {"url": "token", "valueUri": TOKEN_URL},
        {"url": "authorize", "valueUri": TOKEN_URL.replace("/token", "/authorize")},
    ]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
