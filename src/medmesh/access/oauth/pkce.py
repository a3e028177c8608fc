"""PKCE (RFC 7636) with S256, the only method SMART App Launch 2 allows."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

# A verifier is 43–128 unreserved characters; an S256 challenge is 43 base64url characters.
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")


def challenge_of(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def well_formed_challenge(challenge: str) -> bool:
    return _CHALLENGE.fullmatch(challenge) is not None


def verifier_matches(verifier: str, challenge: str) -> bool:
    """Whether `verifier` is well formed and hashes to `challenge` (compared in constant time)."""
    if _VERIFIER.fullmatch(verifier) is None:
        return False
    return secrets.compare_digest(challenge_of(verifier), challenge)
