"""Passwords chosen by people: argon2id hashes (argon2-cffi's RFC 9106 low-memory profile)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from medmesh.domain.errors import MedmeshError

_HASHER = PasswordHasher()  # argon2id, t=3, m=64 MiB, p=4


class WeakPassword(MedmeshError):
    """A password the rules refuse; the message says which rule."""


MIN_LENGTH = 12


def check_password_rules(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"a password needs at least {MIN_LENGTH} characters")


def hash_password(password: str) -> str:
    check_password_rules(password)
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
