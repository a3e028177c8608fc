"""A partner's backend service for the OAuth tests: real RS384 and ES384 key pairs (joserfc over
`cryptography`) and client assertions signed with them, as a SMART Backend Services client would.

No maintained SMART/OAuth client library is installed (authlib is not a dependency), so the
tests sign with joserfc and post with httpx, which is what such a library does underneath.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from medmesh.access.oauth.client_assertion import ASSERTION_TYPE

SigningKey = RSAKey | ECKey


@cache
def rsa_key(kid: str = "partner-rsa-1") -> RSAKey:
    """An RSA key pair (cached: generating one costs time, and tests only read it)."""
    return RSAKey.generate_key(2048, {"kid": kid})


@cache
def ec_key(kid: str = "partner-ec-1") -> ECKey:
    return ECKey.generate_key("P-384", {"kid": kid})


def key_for(alg: str, kid: str | None = None) -> SigningKey:
    if alg == "RS384":
        return rsa_key(kid) if kid else rsa_key()
    return ec_key(kid) if kid else ec_key()


def public_jwks(*keys: SigningKey) -> str:
    """The JWK Set a partner registers: the public halves only."""
    public = [type(k).import_key(k.as_dict(private=False)) for k in keys]
    return json.dumps(KeySet(public).as_dict(private=False))


def assertion(
    key: SigningKey,
    *,
    client_id: str,
    audience: str,
    alg: str | None = None,
    now: datetime | None = None,
    lifetime: timedelta = timedelta(minutes=4),
    jti: str | None = None,
    kid: str | None = None,
    omit: tuple[str, ...] = (),
    **claims: Any,
) -> str:
    """A signed client assertion; `claims` add to or replace the standard ones, `omit` drops
    some."""
    moment = now or datetime.now(UTC)
    payload: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "exp": int((moment + lifetime).timestamp()),
        "jti": jti if jti is not None else str(uuid.uuid4()),
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if k not in omit}
    alg = alg or ("RS384" if isinstance(key, RSAKey) else "ES384")
    header = {"alg": alg, "kid": kid or key.kid}
    return jwt.encode(header, payload, key, algorithms=[alg])


def token_form(signed: str, scope: str = "system/Observation.rs") -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": signed,
        "scope": scope,
    }


@dataclass(frozen=True, slots=True)
class Partner:
    """A registered client and the key it signs with."""

    client_id: str
    key: SigningKey
