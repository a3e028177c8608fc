"""The token endpoint's grants for SMART apps: `authorization_code` (single use, bound to the
client, the redirect URI and the PKCE verifier) and `refresh_token` (rotated on every use; a
rotated token presented again ends the whole grant, as OAuth 2.0 Security BCP §4.14 advises).

Access tokens are the same stored bearer tokens as everywhere else: the user's, narrowed to the
granted scopes and launch patient, decided by the policy on every request.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from medmesh.access.identity.credentials import API_TOKEN_PREFIX, hash_secret, new_secret
from medmesh.access.identity.principals import Role
from medmesh.access.oauth.app_launch import PUBLIC_CLIENT
from medmesh.access.oauth.backend_services import OAuthError, OAuthErrorCode
from medmesh.access.oauth.id_tokens import IdTokenSigner
from medmesh.access.oauth.pkce import verifier_matches
from medmesh.access.policy.scopes import InvalidScope, Scopes
from medmesh.store.database import Database
from medmesh.store.oauth_clients import OAuthClientRecord, OAuthClients
from medmesh.store.oauth_grants import (
    AuthorizationCodes,
    RefreshTokenRecord,
    RefreshTokens,
)
from medmesh.store.tokens import ApiTokens
from medmesh.store.users import UserRecord, Users

APP_ACCESS_TOKEN_LIFETIME = timedelta(minutes=15)
OFFLINE_LIFETIME = timedelta(days=30)
ONLINE_LIFETIME = timedelta(hours=12)  # a web session's longest life
REFRESH_PREFIX = "mmr_"


@dataclass(frozen=True, slots=True)
class AppTokenRequest:
    grant_type: str
    client_id: str | None
    code: str | None = None
    redirect_uri: str | None = None
    code_verifier: str | None = None
    refresh_token: str | None = None
    scope: str | None = None


@dataclass(frozen=True, slots=True)
class AppTokens:
    """A token response for an app (RFC 6749 §5.1 plus SMART's `patient` and `id_token`)."""

    access_token: str
    expires_in: int
    scope: str
    patient: str | None
    refresh_token: str | None
    id_token: str | None
    # For the audit record, not the response: who granted it, to which app.
    client_id: str = ""
    user_id: str = ""
    user_name: str = ""
    organization_id: str = ""

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": self.scope,
        }
        for name in ("patient", "refresh_token", "id_token"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        return body


def _grant_error(description: str) -> OAuthError:
    return OAuthError(OAuthErrorCode.INVALID_GRANT, description)


async def _client(database: Database, client_id: str | None) -> OAuthClientRecord:
    if not client_id:
        raise OAuthError(OAuthErrorCode.INVALID_REQUEST, "client_id is required")
    async with database.read() as conn:
        client = await OAuthClients(conn).get(client_id[:100])
    if client is None or client.disabled or client.kind != PUBLIC_CLIENT:
        raise OAuthError(OAuthErrorCode.INVALID_CLIENT, "unknown or disabled app client_id")
    return client


async def _user(database: Database, user_id: str) -> UserRecord:
    async with database.read() as conn:
        user = await Users(conn).get(user_id)
    if user is None or user.disabled:
        raise _grant_error("the account that granted this access is disabled or gone")
    return user


def _refresh_lifetime(scope: str) -> timedelta | None:
    words = scope.split()
    if "offline_access" in words:
        return OFFLINE_LIFETIME
    if "online_access" in words:
        return ONLINE_LIFETIME
    return None


@dataclass(frozen=True, slots=True)
class _Grant:
    grant_id: str
    client: OAuthClientRecord
    user: UserRecord
    scope: str
    patient_id: str | None
    refresh_expires_at: datetime | None
    nonce: str | None = None


async def _issue(
    database: Database,
    grant: _Grant,
    now: datetime,
    *,
    consume: tuple[str, str] | None,
) -> tuple[str, str | None]:
    """Store a new access token (and refresh token, if the grant has one) in one transaction
    with consuming the code or the old refresh token (`consume`: kind and hash)."""
    access = new_secret(API_TOKEN_PREFIX)
    access_id = str(uuid.uuid4())
    refresh = new_secret(REFRESH_PREFIX) if grant.refresh_expires_at is not None else None
    try:
        async with database.write() as conn:
            refresh_tokens = RefreshTokens(conn)
            if consume is not None:
                kind, consumed = consume
                if kind == "code":
                    fresh = await AuthorizationCodes(conn).use(consumed, now, access_id)
                else:
                    fresh = await refresh_tokens.use(consumed, now)
                if not fresh:
                    raise _Replayed  # rolls the transaction back: nothing issued
            await ApiTokens(conn).add(
                access_id,
                grant.client.name,
                grant.user.role,
                hash_secret(access),
                user_id=grant.user.id,
                client_id=grant.client.id,
                organization_id=grant.user.organization_id,
                scopes=grant.scope,
                patient_id=grant.patient_id,
                expires_at=now + APP_ACCESS_TOKEN_LIFETIME,
                created_at=now,
            )
            if refresh is not None and grant.refresh_expires_at is not None:
                await refresh_tokens.add(
                    RefreshTokenRecord(
                        token_hash=hash_secret(refresh),
                        grant_id=grant.grant_id,
                        client_id=grant.client.id,
                        user_id=grant.user.id,
                        scope=grant.scope,
                        patient_id=grant.patient_id,
                        expires_at=grant.refresh_expires_at,
                        used=False,
                        revoked=False,
                    ),
                    created_at=now,
                    access_token_id=access_id,
                )
    except _Replayed:
        await _end_grant(database, grant.grant_id, now)
        raise _grant_error("this code or refresh token was used before") from None
    return access, refresh


class _Replayed(Exception):
    """A code or refresh token consumed by another request first."""


async def _end_grant(database: Database, grant_id: str, now: datetime) -> None:
    async with database.write() as conn:
        await RefreshTokens(conn).revoke_grant(grant_id, now)


def _id_token(
    signer: IdTokenSigner, grant: _Grant, *, fhir_base_url: str, now: datetime
) -> str | None:
    words = grant.scope.split()
    if "openid" not in words or "fhirUser" not in words:
        return None
    if Role(grant.user.role) is Role.PATIENT and grant.user.patient_id is not None:
        fhir_user = f"{fhir_base_url}/Patient/{grant.user.patient_id}"
    else:
        fhir_user = f"{fhir_base_url}/Practitioner/{grant.user.id}"
    return signer.sign(
        issuer=fhir_base_url,
        subject=grant.user.id,
        audience=grant.client.id,
        fhir_user=fhir_user,
        nonce=grant.nonce,
        now=now,
        name=grant.user.display_name if "profile" in words else None,
    )


def _answer(
    grant: _Grant,
    access: str,
    refresh: str | None,
    signer: IdTokenSigner,
    *,
    fhir_base_url: str,
    now: datetime,
) -> AppTokens:
    return AppTokens(
        access_token=access,
        expires_in=int(APP_ACCESS_TOKEN_LIFETIME.total_seconds()),
        scope=grant.scope,
        patient=grant.patient_id,
        refresh_token=refresh,
        id_token=_id_token(signer, grant, fhir_base_url=fhir_base_url, now=now),
        client_id=grant.client.id,
        user_id=grant.user.id,
        user_name=grant.user.display_name,
        organization_id=grant.user.organization_id,
    )


async def exchange_code(
    database: Database,
    request: AppTokenRequest,
    signer: IdTokenSigner,
    *,
    fhir_base_url: str,
    now: datetime,
) -> AppTokens:
    """Trade an authorization code for tokens, or OAuthError; a failed attempt spends the
    code, so a guessed verifier gets no second try."""
    for name in ("code", "redirect_uri", "code_verifier"):
        if not getattr(request, name):
            raise OAuthError(OAuthErrorCode.INVALID_REQUEST, f"{name} is required")
    assert request.code is not None and request.code_verifier is not None
    client = await _client(database, request.client_id)
    code_hash = hash_secret(request.code)
    async with database.read() as conn:
        code = await AuthorizationCodes(conn).find(code_hash)
    if code is None or code.expires_at <= now:
        raise _grant_error("the authorization code is unknown or expired")
    if code.used:
        await _end_grant(database, code.grant_id, now)
        raise _grant_error("this authorization code was used before")
    problem = None
    if code.client_id != client.id:
        problem = "the authorization code was issued to another client"
    elif code.redirect_uri != request.redirect_uri:
        problem = "redirect_uri differs from the one in the authorization request"
    elif not verifier_matches(request.code_verifier, code.code_challenge):
        problem = "code_verifier does not match the code_challenge (PKCE S256)"
    if problem is not None:
        async with database.write() as conn:
            await AuthorizationCodes(conn).use(code_hash, now, "")
        raise _grant_error(problem)
    user = await _user(database, code.user_id)
    lifetime = _refresh_lifetime(code.scope)
    grant = _Grant(
        grant_id=code.grant_id,
        client=client,
        user=user,
        scope=code.scope,
        patient_id=code.patient_id,
        refresh_expires_at=None if lifetime is None else now + lifetime,
        nonce=code.nonce,
    )
    access, refresh = await _issue(database, grant, now, consume=("code", code_hash))
    return _answer(grant, access, refresh, signer, fhir_base_url=fhir_base_url, now=now)


def _narrowed(original: str, requested: str | None) -> str:
    """A refresh may ask for fewer scopes than granted, never more (RFC 6749 §6)."""
    if requested is None or not requested.strip():
        return original
    granted = original.split()
    extra = [w for w in requested.split() if w not in granted]
    if extra:
        raise OAuthError(
            OAuthErrorCode.INVALID_SCOPE,
            f"a refresh cannot add scopes that were not granted: {' '.join(extra)[:200]}",
        )
    try:
        Scopes.parse(requested)
    except InvalidScope as exc:
        raise OAuthError(OAuthErrorCode.INVALID_SCOPE, str(exc)) from None
    return " ".join(w for w in granted if w in requested.split())


async def refresh_tokens(
    database: Database,
    request: AppTokenRequest,
    signer: IdTokenSigner,
    *,
    fhir_base_url: str,
    now: datetime,
) -> AppTokens:
    """A new access token and a new refresh token for a valid refresh token, or OAuthError."""
    if not request.refresh_token:
        raise OAuthError(OAuthErrorCode.INVALID_REQUEST, "refresh_token is required")
    client = await _client(database, request.client_id)
    token_hash = hash_secret(request.refresh_token)
    async with database.read() as conn:
        found = await RefreshTokens(conn).find(token_hash)
    if found is None or found.client_id != client.id:
        raise _grant_error("the refresh token is unknown")
    if found.revoked:
        raise _grant_error("the refresh token was revoked")
    if found.used:
        await _end_grant(database, found.grant_id, now)
        raise _grant_error("this refresh token was used before; the grant is now revoked")
    if found.expires_at <= now:
        raise _grant_error("the refresh token has expired; sign in again")
    user = await _user(database, found.user_id)
    grant = _Grant(
        grant_id=found.grant_id,
        client=client,
        user=user,
        scope=_narrowed(found.scope, request.scope),
        patient_id=found.patient_id,
        refresh_expires_at=found.expires_at,  # rotation never extends the grant
    )
    access, refresh = await _issue(database, grant, now, consume=("refresh", token_hash))
    return _answer(grant, access, refresh, signer, fhir_base_url=fhir_base_url, now=now)


async def revoke_refresh_token(
    database: Database, client_id: str | None, token: str, *, now: datetime
) -> None:
    """RFC 7009: end the grant of a refresh token this client holds (unknown tokens: no-op)."""
    client = await _client(database, client_id)
    async with database.read() as conn:
        found = await RefreshTokens(conn).find(hash_secret(token))
    if found is not None and found.client_id == client.id:
        await _end_grant(database, found.grant_id, now)
