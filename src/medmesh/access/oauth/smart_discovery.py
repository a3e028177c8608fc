"""What this server tells SMART clients about its authorization: `.well-known/smart-configuration`
and, for id_tokens, `openid-configuration`. Only what is built is listed (docs/oauth.md)."""

from __future__ import annotations

from typing import Any

from medmesh.access.oauth.client_keys import SIGNING_ALGORITHMS
from medmesh.access.oauth.id_tokens import ID_TOKEN_ALGORITHM

TOKEN_PATH = "/oauth/token"  # noqa: S105 (a path, not a secret)
AUTHORIZE_PATH = "/oauth/authorize"
REVOKE_PATH = "/oauth/revoke"
JWKS_PATH = "/oauth/jwks"
# What a backend service may ask for (SMART 2 and 1 syntax both parse); see docs/oauth.md.
SCOPES_SUPPORTED = (
    "system/*.rs",
    "system/Patient.rs",
    "system/Observation.rs",
    "system/Device.rs",
    "system/Flag.rs",
    "patient/*.rs",
    "patient/Patient.rs",
    "patient/Observation.rs",
    "patient/Device.rs",
    "patient/Flag.rs",
    "user/*.rs",
    "user/Patient.rs",
    "user/Observation.rs",
    "openid",
    "fhirUser",
    "profile",
    "launch/patient",
    "offline_access",
    "online_access",
)
CAPABILITIES = (
    "client-confidential-asymmetric",
    "client-public",
    "launch-standalone",
    "context-standalone-patient",
    "sso-openid-connect",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
)


def token_endpoint(public_base_url: str) -> str:
    """The token endpoint's URL: what client assertions must name as `aud`, exactly."""
    return public_base_url.rstrip("/") + TOKEN_PATH


def _url(public_base_url: str, path: str) -> str:
    return public_base_url.rstrip("/") + path


def smart_configuration(public_base_url: str) -> dict[str, Any]:
    return {
        "issuer": _url(public_base_url, "/fhir"),
        "jwks_uri": _url(public_base_url, JWKS_PATH),
        "authorization_endpoint": _url(public_base_url, AUTHORIZE_PATH),
        "token_endpoint": token_endpoint(public_base_url),
        "revocation_endpoint": _url(public_base_url, REVOKE_PATH),
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": list(SIGNING_ALGORITHMS),
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": list(SCOPES_SUPPORTED),
        "capabilities": list(CAPABILITIES),
    }


def openid_configuration(public_base_url: str) -> dict[str, Any]:
    """OpenID Connect discovery at the issuer (the FHIR base), for id_token verification."""
    return {
        "issuer": _url(public_base_url, "/fhir"),
        "jwks_uri": _url(public_base_url, JWKS_PATH),
        "authorization_endpoint": _url(public_base_url, AUTHORIZE_PATH),
        "token_endpoint": token_endpoint(public_base_url),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ID_TOKEN_ALGORITHM],
        "scopes_supported": ["openid", "fhirUser", "profile"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "fhirUser", "name"],
    }
