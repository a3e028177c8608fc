"""Passwords chosen by people: the NIST SP 800-63B (rev. 4) rules and argon2id hashes.

Rules: a minimum length that depends on whether the password is the only factor, at least 64
characters accepted, any printable Unicode (NFKC-normalised), no composition rules, no forced
rotation, and a refusal of passwords that are common or breached, contain the username, or
are one short sequence repeated. docs/accounts.md says why each number is what it is.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError

from medmesh.access.identity.principals import Role
from medmesh.domain.errors import MedmeshError

# RFC 9106's second recommended profile (argon2id, t=3, m=64 MiB, p=4), which is also
# argon2-cffi's default; stronger than OWASP's minimum (m=19 MiB, t=2, p=1). Changing it here
# rehashes each password at its owner's next sign-in.
PROFILE = profiles.RFC_9106_LOW_MEMORY
_HASHER = PasswordHasher.from_parameters(PROFILE)

# NIST SP 800-63B-4 §3.1.1.2: 15 characters when the password is the only factor, 8 when it
# is one factor of two. Staff always have TOTP; a patient's password may stand alone.
MIN_LENGTH_SINGLE_FACTOR = 15
MIN_LENGTH_WITH_SECOND_FACTOR = 8
# NIST asks for at least 64. The ceiling only bounds the work one sign-in can ask for.
MAX_LENGTH = 256

# At most this many hashes at once, whatever the number of event loops and threads: each
# takes 64 MiB and a core for a moment.
_HASHING = threading.BoundedSemaphore(4)

# The list (Django's, by Royce Williams; lower-cased): see access/identity/data/README.md.
_COMMON_LIST = "common-passwords.txt.gz"


class WeakPassword(MedmeshError):
    """A password the rules refuse; the message says which rule, never the password."""


@dataclass(frozen=True, slots=True)
class PasswordRules:
    min_length: int
    max_length: int = MAX_LENGTH


def rules_for(role: Role) -> PasswordRules:
    """Staff must use TOTP, so their password is never the only factor; a patient's may be."""
    if role is Role.PATIENT:
        return PasswordRules(MIN_LENGTH_SINGLE_FACTOR)
    return PasswordRules(MIN_LENGTH_WITH_SECOND_FACTOR)


def normalise(password: str) -> str:
    """NFKC, as NIST asks, so the same password typed on another keyboard still matches."""
    return unicodedata.normalize("NFKC", password)


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common and breached passwords, loaded once."""
    data = files("medmesh.access.identity").joinpath("data", _COMMON_LIST).read_bytes()
    return frozenset(gzip.decompress(data).decode("utf-8").split())


def _is_repetition(text: str) -> bool:
    """'aaaaaaaa', 'abcabcabc', 'passwordpassword': a shorter sequence over and over."""
    return len(text) > 1 and text in (text + text)[1:-1]


def check_password_rules(password: str, *, username: str, rules: PasswordRules) -> None:
    """Raise WeakPassword naming the first rule the password breaks."""
    normal = normalise(password)
    length = len(normal)  # code points, as NIST counts
    if length < rules.min_length:
        raise WeakPassword(
            f"a password needs at least {rules.min_length} characters (this one has "
            f"{length}); a few unrelated words make a long password that is easy to remember"
        )
    if length > rules.max_length:
        raise WeakPassword(f"a password may have at most {rules.max_length} characters")
    if any(not character.isprintable() and character != " " for character in normal):
        raise WeakPassword("a password may not contain control or other invisible characters")
    folded = normal.casefold()
    squeezed = "".join(folded.split())  # "i love you" is guessed as early as "iloveyou"
    listed = common_passwords()
    if folded.strip() in listed or squeezed in listed:
        raise WeakPassword(
            "this password is on a list of common or breached passwords; choose another"
        )
    if _is_repetition(folded) or _is_repetition(squeezed):
        raise WeakPassword("a password that repeats one short sequence is easy to guess")
    name = normalise(username).casefold()
    if len(name) >= 3 and name in folded:
        raise WeakPassword("a password may not contain the username")


def hash_password(password: str, *, username: str, rules: PasswordRules) -> str:
    """The argon2id hash of an acceptable password (rules checked first). CPU-bound: async
    callers use `hash_password_async`."""
    check_password_rules(password, username=username, rules=rules)
    with _HASHING:
        return _HASHER.hash(normalise(password))


async def hash_password_async(password: str, *, username: str, rules: PasswordRules) -> str:
    return await asyncio.to_thread(hash_password, password, username=username, rules=rules)


def verify_password(password_hash: str, password: str) -> bool:
    if len(password) > 4 * MAX_LENGTH:  # longer than any acceptable password: no hashing
        return False
    try:
        with _HASHING:
            return _HASHER.verify(password_hash, normalise(password))
    except (VerificationError, InvalidHashError):
        return False


async def verify_password_async(password_hash: str, password: str) -> bool:
    """Verify off the event loop (argon2 releases the GIL), a few at a time."""
    return await asyncio.to_thread(verify_password, password_hash, password)


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other parameters than today's PROFILE."""
    try:
        return _HASHER.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


def rehash(password: str) -> str:
    """A fresh hash of a password that was just verified (no rules: it is already in use)."""
    with _HASHING:
        return _HASHER.hash(normalise(password))


@cache
def dummy_hash() -> str:
    """A hash to verify against when the username is unknown, so that the answer takes as
    long as for a real account and says nothing about which usernames exist."""
    return _HASHER.hash("not a password of anyone: the username is unknown")
