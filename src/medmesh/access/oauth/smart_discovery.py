"""What this server tells SMART clients about its authorization: `.well-known/smart-configuration`.

Only SMART Backend Services is offered (client credentials with private_key_jwt); the App Launch
(authorization code + PKCE) will add its endpoints here when it lands.
"""

from __future__ import annotations

from typing import Any

from medmesh.access.oauth.client_keys import SIGNING_ALGORITHMS

TOKEN_PATH = "/oauth/token"  # noqa: S105 (a path, not a secret)
# What a backend service may ask for (SMART 2 and 1 syntax both parse); see docs/oauth.md.
SCOPES_SUPPORTED = (
    "system/*.rs",
    "system/Patient.rs",
    "system/Observation.rs",
    "system/Device.rs",
    "system/Flag.rs",
)
CAPABILITIES = ("client-confidential-asymmetric", "permission-v1", "permission-v2")


def token_endpoint(public_base_url: str) -> str:
    """The token endpoint's URL: what client assertions must name as `aud`, exactly."""
    return public_base_url.rstrip("/") + TOKEN_PATH


def smart_configuration(public_base_url: str) -> dict[str, Any]:
    return {
        "token_endpoint": token_endpoint(public_base_url),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(SIGNING_ALGORITHMS),
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": list(SCOPES_SUPPORTED),
        "capabilities": list(CAPABILITIES),
    }
