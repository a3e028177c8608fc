"""OAuth 2.0 token endpoint (SMART Backend Services, and SMART App Launch's authorization code
and refresh token grants), token revocation, the id_token keys and the discovery documents.

Errors follow RFC 6749 §5.2 (a JSON object with `error` and `error_description`), not FHIR
OperationOutcome: OAuth clients expect them. Nothing of the submitted assertion is echoed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from medmesh.access.http import audit
from medmesh.access.identity.principals import ActorKind
from medmesh.access.oauth.app_launch import fhir_base
from medmesh.access.oauth.app_tokens import (
    AppTokenRequest,
    AppTokens,
    exchange_code,
    refresh_tokens,
    revoke_refresh_token,
)
from medmesh.access.oauth.backend_services import (
    OAuthError,
    OAuthErrorCode,
    TokenRequest,
    issue_client_token,
)
from medmesh.access.oauth.client_assertion import ASSERTION_TYPE
from medmesh.access.oauth.id_tokens import IdTokenSigner
from medmesh.access.oauth.launch_audit import app_entry
from medmesh.access.oauth.smart_discovery import (
    JWKS_PATH,
    REVOKE_PATH,
    TOKEN_PATH,
    openid_configuration,
    smart_configuration,
    token_endpoint,
)
from medmesh.http.deps import DatabaseDep, SettingsDep, provided, settings_of

router = APIRouter(tags=["oauth"])

MAX_FORM_BYTES = 16_384
MAX_FORM_FIELDS = 20
_PARAMETERS = (
    "grant_type",
    "scope",
    "client_assertion_type",
    "client_assertion",
    "client_id",
    "code",
    "redirect_uri",
    "code_verifier",
    "refresh_token",
    "token",
    "token_type_hint",
)
_APP_GRANTS = ("authorization_code", "refresh_token")
id_token_signer = provided(IdTokenSigner)
# RFC 6749 §5.1: token responses (and their errors) must not be cached.
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = Field(description="always bearer")
    expires_in: int = Field(description="seconds the token lives (300; 900 for apps)")
    scope: str = Field(description="the scopes granted, space-separated")
    patient: str | None = Field(None, description="the launch patient (SMART apps)")
    refresh_token: str | None = Field(None, description="with offline_access/online_access")
    id_token: str | None = Field(None, description="with openid fhirUser: an RS256 JWT")


class TokenError(BaseModel):
    error: OAuthErrorCode
    error_description: str


_FORM_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["grant_type"],
                    "properties": {
                        "grant_type": {
                            "type": "string",
                            "enum": ["client_credentials", "authorization_code", "refresh_token"],
                        },
                        "code": {"type": "string"},
                        "redirect_uri": {"type": "string"},
                        "code_verifier": {"type": "string"},
                        "refresh_token": {"type": "string"},
                        "client_assertion_type": {"type": "string", "enum": [ASSERTION_TYPE]},
                        "client_assertion": {
                            "type": "string",
                            "description": "a JWT signed (RS384 or ES384) with a registered key",
                        },
                        "scope": {"type": "string", "example": "system/Observation.rs"},
                        "client_id": {"type": "string"},
                    },
                }
            }
        },
    }
}


def _error(error: OAuthError) -> JSONResponse:
    body = {"error": error.code.value, "error_description": error.description}
    return JSONResponse(body, status_code=error.status_code, headers=_NO_STORE)


async def _read_form(request: Request) -> dict[str, str]:
    """The request's form parameters, read with a size limit; each at most once."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise OAuthError(
            OAuthErrorCode.INVALID_REQUEST,
            "send the token request as application/x-www-form-urlencoded",
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise OAuthError(
                OAuthErrorCode.INVALID_REQUEST,
                f"the token request is larger than {MAX_FORM_BYTES} bytes",
            )
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeError, ValueError):
        raise OAuthError(OAuthErrorCode.INVALID_REQUEST, "the form body cannot be read") from None
    found: dict[str, str] = {}
    for name, value in pairs:
        if name not in _PARAMETERS:
            continue  # RFC 6749 §3.2: unrecognised parameters are ignored
        if name in found:
            raise OAuthError(OAuthErrorCode.INVALID_REQUEST, f"{name} is given more than once")
        found[name] = value
    return found


def _client_id(request: Request, form: dict[str, str]) -> str | None:
    """A public client names itself in the form; one sending HTTP Basic credentials is a
    confidential client, which this server does not register (invalid_client)."""
    if request.headers.get("authorization", "").lower().startswith("basic "):
        raise OAuthError(
            OAuthErrorCode.INVALID_CLIENT,
            "apps here are public clients: send client_id in the form, no client secret",
        )
    return form.get("client_id")


async def _audit_app(
    request: Request, grant_type: str, client_id: str | None, issued: AppTokens | None
) -> None:
    """A token issued to an app (the person who granted it is the actor) or refused (the app
    is, as far as it said who it is)."""
    if issued is None and not client_id:
        return
    subtype = "smart-code" if grant_type == "authorization_code" else "smart-refresh"
    source = request.client.host if request.client is not None else None
    if issued is not None:
        entry = app_entry(
            subtype=subtype,
            permitted=True,
            client_id=issued.client_id,
            actor_kind=ActorKind.USER.value,
            actor_id=issued.user_id,
            actor_name=issued.user_name,
            organization_id=issued.organization_id,
            patient_id=issued.patient,
            source=source,
        )
    else:
        assert client_id is not None
        entry = app_entry(
            subtype=subtype,
            permitted=False,
            client_id=client_id,
            actor_kind=ActorKind.CLIENT.value,
            actor_id=client_id,
            actor_name="SMART app",
            organization_id=None,
            patient_id=None,
            source=source,
        )
    await audit(request, [entry])


@router.post(
    TOKEN_PATH,
    summary="Access token: SMART Backend Services (client credentials, private_key_jwt) or a "
    "SMART app (authorization code with PKCE, refresh token)",
    response_model=TokenResponse,
    response_model_exclude_none=True,
    responses={400: {"model": TokenError}, 401: {"model": TokenError}},
    openapi_extra=_FORM_SCHEMA,
)
async def token(request: Request, database: DatabaseDep, settings: SettingsDep) -> JSONResponse:
    now = datetime.now(UTC)
    try:
        form = await _read_form(request)
        grant_type = form.get("grant_type")
        if grant_type in _APP_GRANTS:
            assert grant_type is not None
            app_request = AppTokenRequest(
                grant_type=grant_type,
                client_id=_client_id(request, form),
                code=form.get("code"),
                redirect_uri=form.get("redirect_uri"),
                code_verifier=form.get("code_verifier"),
                refresh_token=form.get("refresh_token"),
                scope=form.get("scope"),
            )
            grant = exchange_code if grant_type == "authorization_code" else refresh_tokens
            try:
                tokens = await grant(
                    database,
                    app_request,
                    id_token_signer(request),
                    fhir_base_url=fhir_base(settings.public_base_url),
                    now=now,
                )
            except OAuthError:
                await _audit_app(request, grant_type, app_request.client_id, None)
                raise
            await _audit_app(request, grant_type, tokens.client_id, tokens)
            return JSONResponse(tokens.body(), headers=_NO_STORE)
        if grant_type not in (None, "client_credentials"):
            raise OAuthError(
                OAuthErrorCode.UNSUPPORTED_GRANT_TYPE,
                "grant_type is client_credentials, authorization_code or refresh_token",
            )
        issued = await issue_client_token(
            database,
            TokenRequest(
                grant_type=grant_type,
                scope=form.get("scope"),
                client_assertion_type=form.get("client_assertion_type"),
                client_assertion=form.get("client_assertion"),
                client_id=form.get("client_id"),
            ),
            token_endpoint=token_endpoint(settings.public_base_url),
            now=now,
        )
    except OAuthError as exc:
        return _error(exc)
    body = {
        "access_token": issued.access_token,
        "token_type": "bearer",
        "expires_in": issued.expires_in,
        "scope": issued.scope,
    }
    return JSONResponse(body, headers=_NO_STORE)


@router.post(
    REVOKE_PATH,
    summary="Revoke a SMART app's refresh token and its grant (RFC 7009)",
    status_code=200,
    responses={400: {"model": TokenError}, 401: {"model": TokenError}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": ["token", "client_id"],
                        "properties": {
                            "token": {"type": "string"},
                            "token_type_hint": {"type": "string"},
                            "client_id": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
)
async def revoke(request: Request, database: DatabaseDep) -> Response:
    try:
        form = await _read_form(request)
        if not form.get("token"):
            raise OAuthError(OAuthErrorCode.INVALID_REQUEST, "token is required")
        client_id = _client_id(request, form)
        await revoke_refresh_token(database, client_id, form["token"], now=datetime.now(UTC))
    except OAuthError as exc:
        return _error(exc)
    assert client_id is not None
    await audit(
        request,
        [
            app_entry(
                subtype="smart-revoke",
                permitted=True,
                client_id=client_id,
                actor_kind=ActorKind.CLIENT.value,
                actor_id=client_id,
                actor_name="SMART app",
                organization_id=None,
                patient_id=None,
                source=request.client.host if request.client is not None else None,
            )
        ],
    )
    return Response(status_code=200, headers=_NO_STORE)


@router.get(JWKS_PATH, summary="Public keys that verify this server's id_tokens (JWK Set)")
async def jwks(request: Request) -> JSONResponse:
    return JSONResponse(id_token_signer(request).jwks())


@router.get(
    "/fhir/.well-known/openid-configuration", summary="OpenID Connect discovery (id_tokens)"
)
async def openid_discovery(request: Request) -> JSONResponse:
    return JSONResponse(openid_configuration(settings_of(request).public_base_url))


def _discovery(request: Request) -> JSONResponse:
    settings = settings_of(request)
    return JSONResponse(smart_configuration(settings.public_base_url))


@router.get("/.well-known/smart-configuration", summary="SMART configuration")
async def smart_configuration_at_root(request: Request) -> JSONResponse:
    return _discovery(request)


@router.get("/fhir/.well-known/smart-configuration", summary="SMART configuration (FHIR base)")
async def smart_configuration_at_fhir_base(request: Request) -> JSONResponse:
    return _discovery(request)
