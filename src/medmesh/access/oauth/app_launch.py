"""SMART App Launch (standalone): the authorization request, what a person may grant an app,
and the authorization code their approval yields.

An authorization request is checked in two stages (RFC 6749 §4.1.2.1): while the client or its
redirect URI is in doubt nothing is redirected (`UnsafeRedirect`, shown to the person); after
that, every refusal goes back to the app as `error=` on its redirect URI (`OAuthError`).
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode, urlsplit, urlunsplit

from medmesh.access.identity.credentials import hash_secret
from medmesh.access.identity.principals import Role
from medmesh.access.oauth.backend_services import OAuthError, OAuthErrorCode
from medmesh.access.oauth.pkce import well_formed_challenge
from medmesh.access.policy.grants import ALLOWED_CONTEXTS
from medmesh.access.policy.scopes import Context, InvalidScope, Scopes
from medmesh.domain.errors import MedmeshError
from medmesh.store.database import Database
from medmesh.store.oauth_clients import OAuthClientRecord, OAuthClients
from medmesh.store.oauth_grants import (
    AuthorizationCodeRecord,
    AuthorizationCodes,
    AuthorizationRequestRecord,
    AuthorizationRequests,
)

PUBLIC_CLIENT = "public"
REQUEST_LIFETIME = timedelta(minutes=10)  # from the app's redirect to the person's answer
CODE_LIFETIME = timedelta(minutes=2)
MAX_STATE = 500
MAX_SCOPE = 2000
IDENTITY_SCOPES = (
    "openid",
    "fhirUser",
    "profile",
    "launch/patient",
    "offline_access",
    "online_access",
)


class UnsafeRedirect(MedmeshError):
    """An authorization request that may not be answered by redirecting (unknown client,
    redirect URI not registered): the person is told, the app is not."""


def fhir_base(public_base_url: str) -> str:
    """The FHIR base URL: what `aud` must name, and the id_token issuer."""
    return public_base_url.rstrip("/") + "/fhir"


@dataclass(frozen=True, slots=True)
class AuthorizationParameters:
    """The query of `GET /oauth/authorize`, each parameter at most once (None: absent)."""

    response_type: str | None
    client_id: str | None
    redirect_uri: str | None
    scope: str | None
    state: str | None
    aud: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    nonce: str | None = None
    launch: str | None = None
    repeated: tuple[str, ...] = ()  # parameters given more than once


def redirect_with(redirect_uri: str, params: dict[str, str]) -> str:
    """The redirect URI with `params` added to its query."""
    parts = urlsplit(redirect_uri)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


async def app_client(database: Database, client_id: str | None) -> OAuthClientRecord:
    """The enabled app (public) client with this client_id, or UnsafeRedirect."""
    if not client_id:
        raise UnsafeRedirect("the app sent no client_id")
    async with database.read() as conn:
        client = await OAuthClients(conn).get(client_id[:100])
    if client is None or client.disabled:
        raise UnsafeRedirect("this app is not registered here, or is disabled")
    if client.kind != PUBLIC_CLIENT:
        raise UnsafeRedirect("this client is a backend service; it cannot ask a person")
    return client


async def accept_request(
    database: Database, params: AuthorizationParameters, *, fhir_base_url: str, now: datetime
) -> tuple[OAuthClientRecord, str]:
    """Check an authorization request and keep it for the person's answer; returns the client
    and the id of the kept request. UnsafeRedirect or OAuthError (to redirect) otherwise."""
    if {"client_id", "redirect_uri"} & set(params.repeated):
        raise UnsafeRedirect("client_id and redirect_uri may each be given once only")
    client = await app_client(database, params.client_id)
    if not params.redirect_uri or params.redirect_uri not in client.redirect_uris:
        raise UnsafeRedirect("the redirect_uri is not one this app registered")

    def refuse(code: OAuthErrorCode, description: str) -> OAuthError:
        return OAuthError(code, description)

    if params.repeated:
        raise refuse(
            OAuthErrorCode.INVALID_REQUEST, f"{params.repeated[0]} is given more than once"
        )
    if params.response_type != "code":
        raise refuse(OAuthErrorCode.UNSUPPORTED_RESPONSE_TYPE, "response_type must be code")
    if not params.state or len(params.state) > MAX_STATE:
        raise refuse(OAuthErrorCode.INVALID_REQUEST, "state is required (at most 500 characters)")
    if params.launch is not None:
        raise refuse(OAuthErrorCode.INVALID_REQUEST, "EHR launch is not supported here")
    if params.aud is None or params.aud.rstrip("/") != fhir_base_url:
        raise refuse(
            OAuthErrorCode.INVALID_REQUEST, f"aud must be this FHIR server, {fhir_base_url}"
        )
    if params.code_challenge_method != "S256":
        raise refuse(OAuthErrorCode.INVALID_REQUEST, "PKCE is required: code_challenge_method=S256")
    if not params.code_challenge or not well_formed_challenge(params.code_challenge):
        raise refuse(
            OAuthErrorCode.INVALID_REQUEST, "code_challenge must be the S256 of a code_verifier"
        )
    if params.nonce is not None and len(params.nonce) > MAX_STATE:
        raise refuse(OAuthErrorCode.INVALID_REQUEST, "nonce is longer than 500 characters")
    if not params.scope or not params.scope.strip() or len(params.scope) > MAX_SCOPE:
        raise refuse(OAuthErrorCode.INVALID_SCOPE, "scope is required")
    try:
        Scopes.parse(params.scope)
    except InvalidScope as exc:
        raise refuse(OAuthErrorCode.INVALID_SCOPE, str(exc)) from None
    request_id = secrets.token_urlsafe(32)
    async with database.write() as conn:
        requests = AuthorizationRequests(conn)
        await requests.forget_expired(now)
        await requests.add(
            AuthorizationRequestRecord(
                id=request_id,
                client_id=client.id,
                redirect_uri=params.redirect_uri,
                scope=" ".join(params.scope.split()),
                state=params.state,
                code_challenge=params.code_challenge,
                nonce=params.nonce,
                expires_at=now + REQUEST_LIFETIME,
            )
        )
    return client, request_id


@dataclass(frozen=True, slots=True)
class Offer:
    """What a person of `role` may grant the app: the requested scopes narrowed to the client's
    registration and to the role (RFC 6749 §3.3: the server may grant less), and what was left
    out, shown on the consent screen and missing from the token response's `scope`."""

    resources: Scopes
    identity: tuple[str, ...]
    refused: tuple[str, ...]
    wants_patient: bool

    def scope_text(self, *, with_patient: bool) -> str:
        """The granted scope string (identity scopes first); patient/ scopes need a patient."""
        kept = [
            str(s)
            for s in sorted(self.resources.granted, key=str)
            if with_patient or s.context is not Context.PATIENT
        ]
        identity = [s for s in self.identity if with_patient or s != "launch/patient"]
        return " ".join([*identity, *kept])


def offer_for(requested: str, client: OAuthClientRecord, role: Role) -> Offer:
    """What a person of `role` may grant, or OAuthError(invalid_scope) when nothing is left."""
    words = requested.split()
    ceiling = Scopes.parse(client.scopes)
    allowed = ALLOWED_CONTEXTS[role]

    def grantable(scopes: Scopes) -> Scopes:
        narrowed = scopes.within(ceiling)
        return Scopes(frozenset(s for s in narrowed.granted if s.context in allowed))

    asked = Scopes.parse(requested)
    kept = grantable(asked)
    refused = [
        str(s)
        for s in sorted(asked.granted, key=str)
        if not grantable(Scopes(frozenset({s}))).granted
    ]
    identity = [w for w in IDENTITY_SCOPES if w in words]
    if "offline_access" in identity and "online_access" in identity:
        identity.remove("online_access")
    wants_patient = "launch/patient" in identity
    if wants_patient and role is Role.ORG_ADMIN:
        identity.remove("launch/patient")  # an admin opens no patient's record
        refused.append("launch/patient")
        wants_patient = False
    if not kept.granted and "openid" not in identity:
        raise OAuthError(
            OAuthErrorCode.INVALID_SCOPE,
            "none of the requested scopes may be granted to this account through this app",
        )
    return Offer(kept, tuple(identity), tuple(refused), wants_patient)


@dataclass(frozen=True, slots=True)
class Approval:
    """The person's approval: who, the scopes granted and the launch patient (if any)."""

    user_id: str
    scope: str
    patient_id: str | None


async def issue_code(
    database: Database, pending: AuthorizationRequestRecord, approval: Approval, now: datetime
) -> str | None:
    """The authorization code for an approved request (hashed at rest), or None when the
    request was answered already (a second submit of the form)."""
    code = secrets.token_urlsafe(32)
    async with database.write() as conn:
        if not await AuthorizationRequests(conn).take(pending.id):
            return None
        codes = AuthorizationCodes(conn)
        await codes.forget_expired(now)
        await codes.add(
            AuthorizationCodeRecord(
                code_hash=hash_secret(code),
                grant_id=str(uuid.uuid4()),
                client_id=pending.client_id,
                user_id=approval.user_id,
                redirect_uri=pending.redirect_uri,
                scope=approval.scope,
                code_challenge=pending.code_challenge,
                patient_id=approval.patient_id,
                nonce=pending.nonce,
                expires_at=now + CODE_LIFETIME,
                used=False,
            )
        )
    return code


async def deny(database: Database, pending: AuthorizationRequestRecord) -> bool:
    """Forget a denied request; False if it was answered already."""
    async with database.write() as conn:
        return await AuthorizationRequests(conn).take(pending.id)
