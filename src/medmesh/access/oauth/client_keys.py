"""The public keys an OAuth client registers (a JWK Set), checked once at registration.

SMART's client-confidential-asymmetric profile: every key has a `kid` unique in the set and is
a bare public RSA or EC key; we verify RS384 and ES384 signatures, so RSA keys need at least
2048 bits and EC keys the P-384 curve.
"""

from __future__ import annotations

import json
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from medmesh.domain.errors import MedmeshError

SIGNING_ALGORITHMS = ("RS384", "ES384")
KEY_TYPE_OF_ALGORITHM = {"RS384": "RSA", "ES384": "EC"}
MIN_RSA_BITS = 2048
MAX_KEYS = 10


class InvalidJwks(MedmeshError):
    """A JWK Set that cannot serve as a client's registered keys; the message says why."""


def _check_key(data: Any, position: int) -> str:
    where = f"key {position + 1}"
    if not isinstance(data, dict):
        raise InvalidJwks(f"{where} is not a JSON object")
    kid = data.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidJwks(f"{where} has no 'kid'; SMART requires one on every key")
    kty = data.get("kty")
    if kty not in ("RSA", "EC"):
        raise InvalidJwks(f"key '{kid[:40]}' has kty {kty!r}; RS384/ES384 need RSA or EC keys")
    expected = "RS384" if kty == "RSA" else "ES384"
    if data.get("alg", expected) != expected:
        raise InvalidJwks(f"{kty} key '{kid[:40]}' must be for alg {expected} (or name no alg)")
    if data.get("use", "sig") != "sig":
        raise InvalidJwks(f"key '{kid[:40]}' is not for signatures (use must be 'sig')")
    if "d" in data:
        raise InvalidJwks(f"key '{kid[:40]}' contains its private part; register public keys")
    try:
        key = RSAKey.import_key(data) if kty == "RSA" else ECKey.import_key(data)
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidJwks(f"key '{kid[:40]}' is not a valid {kty} public key") from exc
    if isinstance(key, RSAKey) and key.raw_value.key_size < MIN_RSA_BITS:
        raise InvalidJwks(f"RSA key '{kid[:40]}' has fewer than {MIN_RSA_BITS} bits")
    if isinstance(key, ECKey) and key.curve_name != "P-384":
        raise InvalidJwks(f"EC key '{kid[:40]}' is on {key.curve_name}; ES384 needs P-384")
    return kid


def parse_client_jwks(text: str) -> KeySet:
    """The key set in `text` (a JWK Set document), or InvalidJwks saying what is wrong."""
    try:
        document = json.loads(text)
    except ValueError:
        raise InvalidJwks("the JWK Set is not valid JSON") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not keys:
        raise InvalidJwks('a JWK Set is a JSON object {"keys": [...]} with at least one key')
    if len(keys) > MAX_KEYS:
        raise InvalidJwks(f"a client registers at most {MAX_KEYS} keys")
    kids = [_check_key(data, n) for n, data in enumerate(keys)]
    if len(set(kids)) != len(kids):
        raise InvalidJwks("two keys share a 'kid'; each kid must be unique in the set")
    return KeySet.import_key_set({"keys": keys})


def signing_key(keys: KeySet, *, kid: str, alg: str) -> RSAKey | ECKey | None:
    """The single registered key with this kid whose type suits `alg`, else None."""
    wanted = KEY_TYPE_OF_ALGORITHM.get(alg)
    found = [k for k in keys if k.kid == kid and k.key_type == wanted]
    if len(found) != 1 or not isinstance(found[0], RSAKey | ECKey):
        return None
    return found[0]
