"""SMART Backend Services: a registered client trades a signed assertion for an access token.

The client credentials grant (RFC 6749 §4.4) with private_key_jwt client authentication. The
token is an opaque secret (stored hashed) that lives five minutes and carries the requested
system/ scopes narrowed to what the client was registered for.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from medmesh.access.identity.credentials import API_TOKEN_PREFIX, hash_secret, new_secret
from medmesh.access.identity.principals import Role
from medmesh.access.oauth.client_assertion import (
    ASSERTION_TYPE,
    CLOCK_SKEW,
    InvalidClient,
    read_assertion,
    verify_assertion,
)
from medmesh.access.oauth.client_keys import InvalidJwks, parse_client_jwks
from medmesh.access.policy.scopes import Context, InvalidScope, Scopes
from medmesh.domain.errors import MedmeshError
from medmesh.store.database import Database
from medmesh.store.oauth_clients import ClientAssertions, OAuthClients
from medmesh.store.tokens import ApiTokens

GRANT_TYPE = "client_credentials"
ACCESS_TOKEN_LIFETIME = timedelta(minutes=5)  # SMART: expires_in SHOULD NOT exceed 300


class OAuthErrorCode(StrEnum):
    """RFC 6749 §5.2 error codes. A failed assertion check is invalid_client, as SMART
    requires for client authentication (not invalid_grant, which is for assertion grants)."""

    INVALID_REQUEST = "invalid_request"
    INVALID_CLIENT = "invalid_client"
    INVALID_GRANT = "invalid_grant"
    UNAUTHORIZED_CLIENT = "unauthorized_client"
    UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
    UNSUPPORTED_RESPONSE_TYPE = "unsupported_response_type"
    INVALID_SCOPE = "invalid_scope"
    ACCESS_DENIED = "access_denied"


class OAuthError(MedmeshError):
    """A token request refused; `code` is the RFC 6749 error, the message its description."""

    def __init__(self, code: OAuthErrorCode, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description

    @property
    def status_code(self) -> int:
        return 401 if self.code is OAuthErrorCode.INVALID_CLIENT else 400


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """The parameters of a token request (each given at most once)."""

    grant_type: str | None
    scope: str | None
    client_assertion_type: str | None
    client_assertion: str | None
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str


def _check_request(request: TokenRequest) -> tuple[str, str]:
    """The assertion and scope of a well-formed client credentials request."""
    if not request.grant_type:
        raise OAuthError(OAuthErrorCode.INVALID_REQUEST, "grant_type is required")
    if request.grant_type != GRANT_TYPE:
        raise OAuthError(
            OAuthErrorCode.UNSUPPORTED_GRANT_TYPE, f"the only grant_type is {GRANT_TYPE}"
        )
    if not request.client_assertion_type or not request.client_assertion:
        raise OAuthError(
            OAuthErrorCode.INVALID_CLIENT,
            "authenticate with private_key_jwt: client_assertion_type and client_assertion",
        )
    if request.client_assertion_type != ASSERTION_TYPE:
        raise OAuthError(
            OAuthErrorCode.INVALID_CLIENT, f"client_assertion_type must be {ASSERTION_TYPE}"
        )
    if not request.scope or not request.scope.strip():
        raise OAuthError(
            OAuthErrorCode.INVALID_REQUEST, "scope is required, e.g. system/Observation.rs"
        )
    return request.client_assertion, request.scope


def narrowed_scopes(requested: str, ceiling: Scopes) -> Scopes:
    """The requested system/ scopes within the client's registered ceiling (RFC 6749 §3.3
    lets the server grant less than asked); invalid_scope when nothing is left."""
    try:
        scopes = Scopes.parse(requested)
    except InvalidScope as exc:
        raise OAuthError(OAuthErrorCode.INVALID_SCOPE, str(exc)) from None
    others = sorted(str(s) for s in scopes.granted if s.context is not Context.SYSTEM)
    if others:
        raise OAuthError(
            OAuthErrorCode.INVALID_SCOPE,
            f"a backend service asks for system/ scopes only, not {', '.join(others)}",
        )
    granted = scopes.within(ceiling)
    if not granted.granted:
        raise OAuthError(
            OAuthErrorCode.INVALID_SCOPE,
            "none of the requested scopes is within what this client was registered for",
        )
    return granted


async def issue_client_token(
    database: Database, request: TokenRequest, *, token_endpoint: str, now: datetime
) -> IssuedToken:
    """Authenticate the client by its assertion and issue an access token, or OAuthError."""
    assertion, requested = _check_request(request)
    try:
        header = read_assertion(assertion)
        if request.client_id is not None and request.client_id != header.client_id:
            raise InvalidClient("client_id does not match the client assertion's iss")
        async with database.read() as conn:
            client = await OAuthClients(conn).get(header.client_id)
        if client is None or client.kind != "backend":
            raise InvalidClient("unknown client_id (of a backend service)")
        try:
            keys = parse_client_jwks(client.jwks)
        except InvalidJwks:
            raise InvalidClient("the client's registered keys are unusable") from None
        verified = verify_assertion(assertion, header, keys, audience=token_endpoint, now=now)
        # Only now that the client proved who it is does it learn that it is disabled.
        if client.disabled:
            raise InvalidClient("this client is disabled")
    except InvalidClient as exc:
        raise OAuthError(OAuthErrorCode.INVALID_CLIENT, str(exc)) from None
    scopes = narrowed_scopes(requested, Scopes.parse(client.scopes))
    token = new_secret(API_TOKEN_PREFIX)
    async with database.write() as conn:
        assertions = ClientAssertions(conn)
        await assertions.forget_expired(now)
        # Kept while the assertion could still be accepted (its exp plus the skew allowed).
        if not await assertions.use(client.id, verified.jti, verified.expires_at + CLOCK_SKEW):
            raise OAuthError(
                OAuthErrorCode.INVALID_CLIENT,
                "this client assertion was used before; sign a new one (new jti) per request",
            )
        await ApiTokens(conn).add(
            str(uuid.uuid4()),
            client.name,
            Role.SYSTEM.value,
            hash_secret(token),
            client_id=client.id,
            organization_id=client.organization_id,
            scopes=str(scopes),
            expires_at=now + ACCESS_TOKEN_LIFETIME,
            created_at=now,
        )
    return IssuedToken(token, int(ACCESS_TOKEN_LIFETIME.total_seconds()), str(scopes))
