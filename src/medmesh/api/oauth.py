"""OAuth 2.0 token endpoint (SMART Backend Services) and SMART discovery documents.

Errors follow RFC 6749 §5.2 (a JSON object with `error` and `error_description`), not FHIR
OperationOutcome: OAuth clients expect them. Nothing of the submitted assertion is echoed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from medmesh.access.oauth.backend_services import (
    OAuthError,
    OAuthErrorCode,
    TokenRequest,
    issue_client_token,
)
from medmesh.access.oauth.client_assertion import ASSERTION_TYPE
from medmesh.access.oauth.smart_discovery import TOKEN_PATH, smart_configuration, token_endpoint
from medmesh.http.deps import DatabaseDep, SettingsDep, settings_of

router = APIRouter(tags=["oauth"])

MAX_FORM_BYTES = 16_384
MAX_FORM_FIELDS = 20
_PARAMETERS = ("grant_type", "scope", "client_assertion_type", "client_assertion", "client_id")
# RFC 6749 §5.1: token responses (and their errors) must not be cached.
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = Field(description="always bearer")
    expires_in: int = Field(description="seconds the token lives (300)")
    scope: str = Field(description="the scopes granted, space-separated")


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
                    "required": [
                        "grant_type",
                        "client_assertion_type",
                        "client_assertion",
                        "scope",
                    ],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["client_credentials"]},
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


async def _read_form(request: Request) -> TokenRequest:
    """The token request's parameters, read with a size limit; each at most once."""
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
    return TokenRequest(
        grant_type=found.get("grant_type"),
        scope=found.get("scope"),
        client_assertion_type=found.get("client_assertion_type"),
        client_assertion=found.get("client_assertion"),
        client_id=found.get("client_id"),
    )


@router.post(
    TOKEN_PATH,
    summary="Access token for a SMART Backend Services client (client credentials, "
    "private_key_jwt)",
    response_model=TokenResponse,
    responses={400: {"model": TokenError}, 401: {"model": TokenError}},
    openapi_extra=_FORM_SCHEMA,
)
async def token(request: Request, database: DatabaseDep, settings: SettingsDep) -> JSONResponse:
    try:
        token_request = await _read_form(request)
        issued = await issue_client_token(
            database,
            token_request,
            token_endpoint=token_endpoint(settings.public_base_url),
            now=datetime.now(UTC),
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


def _discovery(request: Request) -> JSONResponse:
    settings = settings_of(request)
    return JSONResponse(smart_configuration(settings.public_base_url))


@router.get("/.well-known/smart-configuration", summary="SMART configuration")
async def smart_configuration_at_root(request: Request) -> JSONResponse:
    return _discovery(request)


@router.get("/fhir/.well-known/smart-configuration", summary="SMART configuration (FHIR base)")
async def smart_configuration_at_fhir_base(request: Request) -> JSONResponse:
    return _discovery(request)
