"""Secrets for devices and API clients.

They are 256-bit random values, so a single SHA-256 is the right stored form (a slow password
hash adds nothing against brute force of such a space and would cost every ingest request).
Passwords chosen by people are a different matter and use argon2id (see the access issue).
"""

from __future__ import annotations

import hashlib
import secrets

DEVICE_SECRET_PREFIX = "mmd"  # noqa: S105 (a label, not a secret)
API_TOKEN_PREFIX = "mmt"  # noqa: S105 (a label, not a secret)


def new_secret(prefix: str) -> str:
    """A fresh secret; the prefix tells people (and secret scanners) what it is."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
