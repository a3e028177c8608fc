"""TOTP codes (RFC 6238): the ±1 step window and replay refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pyotp

from medmesh.access.identity import totp

SECRET = pyotp.random_base32(32)
NOW = datetime(2026, 3, 1, 12, 0, 10, tzinfo=UTC)
STEP = int(NOW.timestamp()) // 30


def code(at: datetime) -> str:
    return pyotp.TOTP(SECRET).at(at)


def test_the_code_of_now_and_of_the_steps_either_side_are_accepted() -> None:
    for offset in (-30, 0, 30):
        at = NOW + timedelta(seconds=offset)
        assert totp.accepted_step(SECRET, code(at), at=NOW, last_step=None) == STEP + offset // 30


def test_codes_two_steps_away_are_refused() -> None:
    for offset in (-60, 60):
        assert (
            totp.accepted_step(
                SECRET, code(NOW + timedelta(seconds=offset)), at=NOW, last_step=None
            )
            is None
        )


def test_a_code_is_accepted_once() -> None:
    step = totp.accepted_step(SECRET, code(NOW), at=NOW, last_step=None)
    assert step == STEP
    assert totp.accepted_step(SECRET, code(NOW), at=NOW, last_step=step) is None
    earlier = NOW - timedelta(seconds=30)  # an older code, still in the window: also used up
    assert totp.accepted_step(SECRET, code(earlier), at=NOW, last_step=step) is None
    later = NOW + timedelta(seconds=30)
    assert totp.accepted_step(SECRET, code(later), at=NOW, last_step=step) == STEP + 1


def test_spaces_are_ignored_and_other_text_refused() -> None:
    spaced = code(NOW)[:3] + " " + code(NOW)[3:]
    assert totp.accepted_step(SECRET, spaced, at=NOW, last_step=None) == STEP
    for wrong in ("", "12345", "1234567", "abcdef", "١٢٣٤٥٦"):
        assert totp.accepted_step(SECRET, wrong, at=NOW, last_step=None) is None


def test_the_enrolment_uri_names_the_account_and_issuer_with_30_second_6_digit_codes() -> None:
    enrolment = totp.enrolment(SECRET, "dr.ada")
    uri = urlparse(enrolment.uri)
    assert uri.scheme == "otpauth" and uri.netloc == "totp" and uri.path == "/medmesh:dr.ada"
    query = parse_qs(uri.query)
    assert query["secret"] == [SECRET] and query["issuer"] == ["medmesh"]
    assert pyotp.parse_uri(enrolment.uri).now() == pyotp.TOTP(SECRET).now()
    assert len(totp.new_secret()) == 32 and totp.new_secret() != totp.new_secret()
