"""Client authentication with a signed JWT (private_key_jwt, RFC 7523 §3 as SMART profiles it).

The assertion names its client in `iss` and its key in the `kid` header; it is verified with
that registered key, RS384 or ES384 only, and must say iss == sub == client_id, aud == our
token endpoint exactly, expire within five minutes and carry a `jti` (one-time use is checked
by the caller, against the database). Messages say what was wrong, never quote the assertion.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet

from medmesh.access.oauth.client_keys import SIGNING_ALGORITHMS, signing_key
from medmesh.domain.errors import MedmeshError

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_LIFETIME = timedelta(minutes=5)  # SMART: exp no more than five minutes in the future
CLOCK_SKEW = timedelta(seconds=30)  # allowed difference between the client's clock and ours
MAX_ASSERTION_CHARS = 8192
MAX_JTI_CHARS = 200  # oauth_assertions.jti


class InvalidClient(MedmeshError):
    """Client authentication failed (OAuth error invalid_client); the message says why."""


@dataclass(frozen=True, slots=True)
class AssertionHeader:
    """What an assertion says about itself before it is verified: which client, which key."""

    client_id: str
    alg: str
    kid: str


@dataclass(frozen=True, slots=True)
class VerifiedAssertion:
    client_id: str
    jti: str
    expires_at: datetime


def read_assertion(assertion: str) -> AssertionHeader:
    """The claimed client and key of an assertion, not yet trusted: they only choose the key
    that must then verify it."""
    if len(assertion) > MAX_ASSERTION_CHARS:
        raise InvalidClient(f"the client assertion is longer than {MAX_ASSERTION_CHARS} characters")
    try:
        compact = jws.extract_compact(assertion.encode("ascii"))
        header = compact.headers()
        claims = json.loads(compact.payload)
    except (JoseError, UnicodeError, ValueError):
        raise InvalidClient("the client assertion is not a signed JWT (JWS compact form)") from None
    alg = header.get("alg")
    if alg not in SIGNING_ALGORITHMS:
        raise InvalidClient(
            f"the client assertion must be signed with {' or '.join(SIGNING_ALGORITHMS)}"
        )
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidClient("the client assertion's header has no 'kid' naming the signing key")
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    if not isinstance(issuer, str) or not issuer:
        raise InvalidClient("the client assertion has no 'iss' claim (the client_id)")
    return AssertionHeader(issuer, alg, kid)


def verify_assertion(
    assertion: str, header: AssertionHeader, keys: KeySet, *, audience: str, now: datetime
) -> VerifiedAssertion:
    """Verify the signature with the client's registered key and check the claims."""
    key = signing_key(keys, kid=header.kid, alg=header.alg)
    if key is None:
        raise InvalidClient(
            f"no registered {header.alg} key of this client has kid '{header.kid[:40]}'"
        )
    try:
        token = jwt.decode(assertion, key, algorithms=[header.alg])
    except BadSignatureError:
        raise InvalidClient("the client assertion's signature does not verify") from None
    except JoseError:
        raise InvalidClient("the client assertion cannot be verified") from None
    client: jwt.ClaimsOption = {"essential": True, "value": header.client_id}
    registry = jwt.JWTClaimsRegistry(
        now=int(now.timestamp()),
        leeway=int(CLOCK_SKEW.total_seconds()),
        iss=client,
        sub=client,
        aud={"essential": True, "value": audience},
        exp={"essential": True},
        jti={"essential": True},
    )
    try:
        registry.validate(token.claims)
    except MissingClaimError as exc:
        raise InvalidClient(f"the client assertion lacks the claim(s) {exc.claim}") from None
    except ExpiredTokenError:
        raise InvalidClient("the client assertion has expired") from None
    except InvalidClaimError as exc:
        raise InvalidClient(_invalid_claim(exc.claim, audience)) from None
    expires = float(token.claims["exp"])
    if expires > (now + MAX_LIFETIME + CLOCK_SKEW).timestamp():
        raise InvalidClient("the client assertion's exp is more than five minutes ahead")
    jti = token.claims["jti"]
    if len(jti) > MAX_JTI_CHARS:
        raise InvalidClient(f"the client assertion's jti is longer than {MAX_JTI_CHARS} characters")
    return VerifiedAssertion(header.client_id, jti, datetime.fromtimestamp(expires, UTC))


def _invalid_claim(claim: str, audience: str) -> str:
    if claim in ("iss", "sub"):
        return "the client assertion's iss and sub must both be the client_id"
    if claim == "aud":
        return f"the client assertion's aud must be this token endpoint, {audience}"
    if claim in ("nbf", "iat"):
        return f"the client assertion's {claim} is in the future"
    return f"the client assertion's {claim} claim is not valid"
