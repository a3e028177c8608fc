"""The password rules (NIST SP 800-63B rev. 4) and argon2id hashing."""

from __future__ import annotations

import unicodedata

import pytest
from argon2 import PasswordHasher
from hypothesis import given
from hypothesis import strategies as st

from medmesh.access.identity import passwords
from medmesh.access.identity.passwords import (
    MAX_LENGTH,
    PasswordRules,
    WeakPassword,
    check_password_rules,
    rules_for,
)
from medmesh.access.identity.principals import Role

PATIENT = rules_for(Role.PATIENT)
STAFF = rules_for(Role.CLINICIAN)
# Printable text without spaces only at the ends (which the list check strips).
printable = st.text(
    st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")),
    min_size=1,
)


def test_a_password_alone_needs_15_characters_and_one_with_a_second_factor_8() -> None:
    assert rules_for(Role.PATIENT).min_length == 15
    assert rules_for(Role.CLINICIAN).min_length == 8
    assert rules_for(Role.ORG_ADMIN).min_length == 8
    with pytest.raises(WeakPassword, match=r"at least 15 characters \(this one has 14\)"):
        check_password_rules("tulip meadow 7", username="jane", rules=PATIENT)
    check_password_rules("tulip meadow 7", username="jane", rules=STAFF)


def test_common_and_breached_passwords_are_refused_whatever_their_case() -> None:
    for common in ("password123456", "Password123456", "I love you", "QWERTYUIOP"):
        with pytest.raises(WeakPassword, match="list of common or breached passwords"):
            check_password_rules(common, username="jane", rules=STAFF)


def test_the_shipped_list_is_large_and_loaded_once() -> None:
    listed = passwords.common_passwords()
    assert len(listed) > 19_000 and "123456" in listed and "password" in listed
    assert passwords.common_passwords() is listed


def test_a_password_containing_the_username_is_refused() -> None:
    with pytest.raises(WeakPassword, match="username"):
        check_password_rules("my name is Jane.Doe ok", username="jane.doe", rules=STAFF)


def test_a_short_sequence_repeated_is_refused() -> None:
    for repeated in ("aaaaaaaaaaaaaaaa", "abcabcabcabcabcabc", "tulip7 tulip7 tulip7"):
        with pytest.raises(WeakPassword, match="repeats"):
            check_password_rules(repeated, username="jane", rules=PATIENT)


def test_no_composition_rules_long_passphrases_and_any_script_are_accepted() -> None:
    for fine in (
        "correct horse battery staple",  # lower case and spaces only
        "щука плывёт в реке",  # Cyrillic
        "森の中で静かに歩くのが好きです",  # 15 Japanese characters
        "x" * 3 + "y" * 61 + "z",  # 65 characters
    ):
        check_password_rules(fine, username="jane", rules=PATIENT)
    with pytest.raises(WeakPassword, match=f"at most {MAX_LENGTH}"):
        check_password_rules("ab" * MAX_LENGTH + "c", username="jane", rules=PATIENT)


def test_control_characters_are_refused() -> None:
    with pytest.raises(WeakPassword, match="control"):
        check_password_rules("tulip meadow\x00 seven", username="jane", rules=STAFF)


@given(printable)
def test_length_is_counted_in_code_points_after_nfkc(password: str) -> None:
    normal = unicodedata.normalize("NFKC", password)
    rules = PasswordRules(min_length=len(normal) + 1)
    with pytest.raises(WeakPassword, match="at least"):
        check_password_rules(password, username="jane", rules=rules)


@given(printable)
def test_the_rules_give_the_same_answer_for_every_unicode_form(password: str) -> None:
    answers = set()
    for form in ("NFC", "NFD", "NFKC", "NFKD"):
        try:
            check_password_rules(unicodedata.normalize(form, password), username="q", rules=STAFF)
            answers.add("accepted")
        except WeakPassword as refusal:
            answers.add(str(refusal).split("(")[0])
    assert len(answers) == 1


def test_a_password_typed_in_another_unicode_form_still_verifies() -> None:
    composed = "café au lait, s'il vous plaît"
    stored = passwords.hash_password(composed, username="jane", rules=PATIENT)
    assert passwords.verify_password(stored, unicodedata.normalize("NFD", composed))
    assert not passwords.verify_password(stored, "cafe au lait, s'il vous plait")


def test_hashes_are_argon2id_with_rfc_9106_parameters_and_old_ones_need_a_rehash() -> None:
    stored = passwords.hash_password("tulip meadow seven", username="jane", rules=STAFF)
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert not passwords.needs_rehash(stored)
    weaker = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("x")
    assert passwords.needs_rehash(weaker)
    assert passwords.needs_rehash("not a hash")


def test_a_wrong_or_malformed_hash_never_verifies() -> None:
    stored = passwords.hash_password("tulip meadow seven", username="jane", rules=STAFF)
    assert not passwords.verify_password(stored, "tulip meadow eight")
    assert not passwords.verify_password("garbage", "tulip meadow seven")
    assert not passwords.verify_password(passwords.dummy_hash(), "")
