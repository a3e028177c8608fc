"""OpenID Connect id_tokens for SMART apps (`openid fhirUser`): RS256 JWTs signed with the
server's key, whose public half is published at the JWKS URL.

The key is read from a file (a private JWK, created with mode 0600 on first start if missing);
without one configured, each process draws its own, as the session secret does: id_tokens then
verify only against the JWKS of the process that signed them (docs/oauth.md).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey

ID_TOKEN_ALGORITHM = "RS256"  # noqa: S105 (an algorithm name) SMART: servers SHALL support it
ID_TOKEN_LIFETIME = timedelta(minutes=15)


def _new_key() -> RSAKey:
    return RSAKey.generate_key(2048, auto_kid=True)


def load_or_create_key(path: Path | None) -> RSAKey:
    """The signing key in `path` (created there if missing), or a fresh one for this process."""
    if path is None:
        return _new_key()
    if path.exists():
        return RSAKey.import_key(json.loads(path.read_text(encoding="utf-8")))
    key = _new_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(key.as_dict(private=True), out)
    return key


class IdTokenSigner:
    """Signs id_tokens with the key in `key_file` (loaded, or made, on first use)."""

    def __init__(self, key_file: Path | None) -> None:
        self._key_file = key_file
        self._key: RSAKey | None = None

    @property
    def key(self) -> RSAKey:
        if self._key is None:
            self._key = load_or_create_key(self._key_file)
        return self._key

    def jwks(self) -> dict[str, Any]:
        public = self.key.as_dict(private=False)
        return {"keys": [{**public, "use": "sig", "alg": ID_TOKEN_ALGORITHM}]}

    def sign(
        self,
        *,
        issuer: str,
        subject: str,
        audience: str,
        fhir_user: str | None,
        nonce: str | None,
        now: datetime,
        name: str | None = None,
    ) -> str:
        claims: dict[str, Any] = {
            "iss": issuer,
            "sub": subject,
            "aud": audience,
            "iat": int(now.timestamp()),
            "exp": int((now + ID_TOKEN_LIFETIME).timestamp()),
        }
        if fhir_user is not None:
            claims["fhirUser"] = fhir_user
        if nonce is not None:
            claims["nonce"] = nonce
        if name is not None:
            claims["name"] = name
        header = {"alg": ID_TOKEN_ALGORITHM, "kid": self.key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, self.key, algorithms=[ID_TOKEN_ALGORITHM])
