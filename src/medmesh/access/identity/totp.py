"""Time-based one-time passwords (RFC 6238 via pyotp): 6 digits, 30-second steps, the step
before and after accepted for clock drift, and no code accepted twice."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyotp
from pyotp import utils

ISSUER = "medmesh"
DIGITS = 6
STEP_SECONDS = 30
WINDOW = 1  # steps either side of now: a phone's clock a little off, a code typed slowly


@dataclass(frozen=True, slots=True)
class Enrolment:
    """What a person needs to add the account to an authenticator app."""

    secret: str  # base32, as typed by hand
    uri: str  # otpauth://totp/…, what a QR code would hold


def new_secret() -> str:
    """160 random bits (RFC 4226's recommended length), base32."""
    return pyotp.random_base32(32)


def enrolment(secret: str, username: str) -> Enrolment:
    uri = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=username, issuer_name=ISSUER
    )
    return Enrolment(secret, uri)


def accepted_step(secret: str, code: str, *, at: datetime, last_step: int | None) -> int | None:
    """The time step whose code this is, if it is valid now and newer than the last code used;
    None otherwise. Store the step returned as the new last step: that refuses replays."""
    digits = "".join(code.split())  # "123 456" as some apps show it
    if len(digits) != DIGITS or not (digits.isascii() and digits.isdigit()):
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    now_step = totp.timecode(at)
    for step in range(now_step - WINDOW, now_step + WINDOW + 1):
        if last_step is not None and step <= last_step:
            continue  # this code, or an older one, was used already
        if utils.strings_equal(digits, totp.generate_otp(step)):
            return step
    return None


def code_at(secret: str, at: datetime) -> str:
    """The code an authenticator app shows at `at` (the demo and tests use it)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).at(at)
