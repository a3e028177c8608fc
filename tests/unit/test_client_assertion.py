"""Client assertions (private_key_jwt) checked against a client's registered keys, and the
JWK Sets a client may register. Real RS384/ES384 keys, no database."""

from __future__ import annotations

import base64
import hmac
import json
import warnings
from datetime import UTC, datetime, timedelta

import pytest
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OctKey, RSAKey

from medmesh.access.oauth.client_assertion import (
    InvalidClient,
    VerifiedAssertion,
    read_assertion,
    verify_assertion,
)
from medmesh.access.oauth.client_keys import InvalidJwks, parse_client_jwks
from tests.oauth_fixtures import assertion, ec_key, key_for, public_jwks, rsa_key

AUD = "https://medmesh.example/oauth/token"
CLIENT = "5f0e2c1a-0000-4000-8000-000000000001"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def check(signed: str, *, now: datetime = NOW, jwks: str | None = None) -> VerifiedAssertion:
    keys = parse_client_jwks(jwks or public_jwks(rsa_key(), ec_key()))
    return verify_assertion(signed, read_assertion(signed), keys, audience=AUD, now=now)


def _small_rsa_key() -> dict[str, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # too small: that is the point
        return dict(RSAKey.generate_key(1024, {"kid": "small"}).as_dict(private=False))


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_an_assertion_signed_with_a_registered_key_is_accepted(alg: str) -> None:
    signed = assertion(key_for(alg), client_id=CLIENT, audience=AUD, now=NOW, jti="one")
    verified = check(signed)
    assert verified.client_id == CLIENT and verified.jti == "one"
    assert verified.expires_at == NOW + timedelta(minutes=4)


def test_an_assertion_signed_with_another_key_of_the_same_kid_is_refused() -> None:
    impostor = RSAKey.generate_key(2048, {"kid": rsa_key().kid})
    signed = assertion(impostor, client_id=CLIENT, audience=AUD, now=NOW)
    with pytest.raises(InvalidClient, match="signature does not verify"):
        check(signed)


def test_an_assertion_naming_an_unregistered_kid_is_refused() -> None:
    signed = assertion(rsa_key(), client_id=CLIENT, audience=AUD, now=NOW, kid="elsewhere")
    with pytest.raises(InvalidClient, match=r"no registered RS384 key .* kid 'elsewhere'"):
        check(signed)


def test_an_ec_kid_used_with_rs384_finds_no_key() -> None:
    # The header says RS384 but names the EC key: the kty must suit the algorithm.
    signed = assertion(rsa_key(), client_id=CLIENT, audience=AUD, now=NOW, kid=ec_key().kid)
    with pytest.raises(InvalidClient, match="no registered RS384 key"):
        check(signed)


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"aud": "http://127.0.0.1:8000/oauth/token"}, "aud must be this token endpoint"),
        ({"aud": AUD + "/"}, "aud must be this token endpoint"),
        ({"sub": "someone-else"}, "iss and sub must both be the client_id"),
        ({"omit": ("jti",)}, r"lacks the claim\(s\) jti"),
        ({"omit": ("exp",)}, r"lacks the claim\(s\) exp"),
        ({"jti": ""}, "jti claim is not valid"),
        ({"jti": 7}, "jti claim is not valid"),
        ({"nbf": int((NOW + timedelta(minutes=2)).timestamp())}, "nbf is in the future"),
    ],
)
def test_an_assertion_with_a_wrong_or_missing_claim_is_refused(
    claims: dict[str, object], message: str
) -> None:
    signed = assertion(rsa_key(), client_id=CLIENT, audience=AUD, now=NOW, **claims)
    with pytest.raises(InvalidClient, match=message):
        check(signed)


def test_an_audience_list_holding_the_token_endpoint_is_accepted() -> None:
    signed = assertion(rsa_key(), client_id=CLIENT, audience=AUD, now=NOW, aud=[AUD])
    assert check(signed).client_id == CLIENT


def test_an_expired_assertion_is_refused_beyond_the_clock_skew_allowance() -> None:
    signed = assertion(rsa_key(), client_id=CLIENT, audience=AUD, now=NOW)  # exp NOW + 4 min
    assert check(signed, now=NOW + timedelta(minutes=4, seconds=20)).jti  # within 30 s skew
    with pytest.raises(InvalidClient, match="has expired"):
        check(signed, now=NOW + timedelta(minutes=5))


def test_an_assertion_expiring_more_than_five_minutes_ahead_is_refused() -> None:
    signed = assertion(
        rsa_key(), client_id=CLIENT, audience=AUD, now=NOW, lifetime=timedelta(minutes=10)
    )
    with pytest.raises(InvalidClient, match="more than five minutes ahead"):
        check(signed)


def test_an_unsigned_assertion_is_refused_before_any_key_is_looked_up() -> None:
    header = _b64({"alg": "none", "typ": "JWT", "kid": rsa_key().kid})
    claims = {"iss": CLIENT, "sub": CLIENT, "aud": AUD, "exp": 2_000_000_000, "jti": "x"}
    unsigned = f"{header}.{_b64(claims)}."
    with pytest.raises(InvalidClient, match="signed with RS384 or ES384"):
        read_assertion(unsigned)


def test_an_hs256_assertion_keyed_with_the_public_key_is_refused() -> None:
    # The classic algorithm confusion: an HMAC "signed" with the client's public key, made by
    # hand because joserfc itself will not use a public key as an HMAC secret.
    header = _b64({"alg": "HS256", "typ": "JWT", "kid": rsa_key().kid})
    claims = _b64({"iss": CLIENT, "sub": CLIENT, "aud": AUD, "exp": 2_000_000_000, "jti": "x"})
    mac = hmac.new(rsa_key().as_pem(private=False), f"{header}.{claims}".encode(), "sha256")
    forged = f"{header}.{claims}.{base64.urlsafe_b64encode(mac.digest()).rstrip(b'=').decode()}"
    with pytest.raises(InvalidClient, match="signed with RS384 or ES384"):
        read_assertion(forged)


def test_rs256_is_not_accepted_either() -> None:
    signed = assertion(rsa_key(), client_id=CLIENT, audience=AUD, now=NOW, alg="RS256")
    with pytest.raises(InvalidClient, match="signed with RS384 or ES384"):
        read_assertion(signed)


@pytest.mark.parametrize(
    "garbage", ["", "not-a-jwt", "a.b.c", "é.é.é", "eyJhbGciOiJSUzM4NCJ9.bm90IGpzb24.c2ln"]
)
def test_garbage_is_refused_with_a_message_that_does_not_quote_it(garbage: str) -> None:
    with pytest.raises(InvalidClient, match="not a signed JWT") as refused:
        read_assertion(garbage)
    assert not garbage or garbage not in str(refused.value)


def test_a_jwks_with_a_private_key_is_refused_at_registration() -> None:
    private = json.dumps({"keys": [rsa_key().as_dict(private=True)]})
    with pytest.raises(InvalidJwks, match="private part"):
        parse_client_jwks(private)


# Test ids name the expected refusal, not the generated keys: pytest-xdist's workers must
# collect the same ids, and a fresh key each collection would differ.
_UNSERVABLE_JWKS = [
    ("{", "not valid JSON"),
    ('{"keys": []}', "at least one key"),
    ("[]", "at least one key"),
    (
        json.dumps({"keys": [{k: v for k, v in rsa_key().as_dict().items() if k != "kid"}]}),
        "has no 'kid'",
    ),
    (json.dumps({"keys": [OctKey.generate_key(256, {"kid": "k"}).as_dict()]}), "kty 'oct'"),
    (json.dumps({"keys": [_small_rsa_key()]}), "fewer than 2048 bits"),
    (
        json.dumps({"keys": [ECKey.generate_key("P-256", {"kid": "p"}).as_dict(private=False)]}),
        "ES384 needs P-384",
    ),
    (
        json.dumps({"keys": [{**rsa_key().as_dict(private=False), "alg": "RS256"}]}),
        "must be for alg RS384",
    ),
    (public_jwks(rsa_key(), RSAKey.generate_key(2048, {"kid": rsa_key().kid})), "share a"),
]


@pytest.mark.filterwarnings("ignore:Key size should be:joserfc.errors.SecurityWarning")
@pytest.mark.parametrize(
    ("jwks", "message"),
    [pytest.param(jwks, message, id=message) for jwks, message in _UNSERVABLE_JWKS],
)
def test_a_jwks_that_cannot_serve_is_refused_with_the_reason(jwks: str, message: str) -> None:
    with pytest.raises(InvalidJwks, match=message):
        parse_client_jwks(jwks)
