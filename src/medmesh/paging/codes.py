"""The short opaque code of a page's link: random, shown to the person (to read out, or type
at /page), stored only as a hash. It opens nothing by itself: sign-in comes first."""

from __future__ import annotations

import hashlib
import secrets

_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
LENGTH = 10  # 50 bits


def new_code() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(LENGTH))


def normalized(code: str) -> str:
    return code.strip().upper().replace("-", "").replace(" ", "")


def code_hash(code: str) -> str:
    return hashlib.sha256(normalized(code).encode()).hexdigest()


def shown(code: str) -> str:
    """The code as printed: two groups of five."""
    return f"{code[:5]}-{code[5:]}"
