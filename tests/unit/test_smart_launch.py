"""The pure parts of SMART App Launch: PKCE S256, what a person of each role may grant an app,
and the consent screen's plain words."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medmesh.access.identity.principals import Role
from medmesh.access.oauth.app_launch import offer_for, redirect_with
from medmesh.access.oauth.backend_services import OAuthError
from medmesh.access.oauth.pkce import challenge_of, verifier_matches, well_formed_challenge
from medmesh.access.oauth.scope_text import describe
from medmesh.access.policy.scopes import parse_scope
from medmesh.store.oauth_clients import OAuthClientRecord

APP = OAuthClientRecord(
    id="app",
    organization_id="default",
    name="Viewer",
    jwks="",
    scopes="patient/*.rs user/Observation.rs",
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
    disabled=False,
    kind="public",
    redirect_uris=("https://viewer.example/cb",),
)


def test_pkce_matches_the_rfc_7636_example() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636 Appendix B
    assert challenge_of(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert verifier_matches(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    assert well_formed_challenge("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~",
               min_size=43, max_size=128))  # fmt: skip
def test_a_verifier_matches_its_own_challenge_only(verifier: str) -> None:
    challenge = challenge_of(verifier)
    assert well_formed_challenge(challenge) and verifier_matches(verifier, challenge)
    assert not verifier_matches(verifier + "x", challenge)


@pytest.mark.parametrize("verifier", ["short", "x" * 129, "é" * 50, "a b" * 20])
def test_a_malformed_verifier_never_matches(verifier: str) -> None:
    assert not verifier_matches(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")


def test_a_patient_is_offered_their_own_patient_scopes_and_told_what_is_left_out() -> None:
    offer = offer_for(
        "launch/patient openid fhirUser patient/Observation.read user/*.rs system/*.rs",
        APP,
        Role.PATIENT,
    )
    assert str(offer.resources) == "patient/Observation.rs"
    assert offer.identity == ("openid", "fhirUser", "launch/patient")
    assert offer.refused == ("system/*.rs", "user/*.rs")
    assert offer.wants_patient
    assert offer.scope_text(with_patient=True) == (
        "openid fhirUser launch/patient patient/Observation.rs"
    )


def test_a_clinician_gets_user_scopes_within_the_apps_registration() -> None:
    offer = offer_for(
        "user/*.rs patient/Device.rs offline_access online_access", APP, Role.CLINICIAN
    )
    assert str(offer.resources) == "patient/Device.rs user/Observation.rs"
    assert offer.identity == ("offline_access",)  # offline wins over online
    # Without a launch patient, patient/ scopes would open nothing: they are left out.
    assert offer.scope_text(with_patient=False) == "offline_access user/Observation.rs"


def test_an_admin_opens_no_patient_and_nothing_grantable_is_invalid_scope() -> None:
    offer = offer_for("launch/patient openid user/Observation.rs", APP, Role.ORG_ADMIN)
    assert not offer.wants_patient and "launch/patient" in offer.refused
    with pytest.raises(OAuthError) as refused:
        offer_for("user/*.rs", APP, Role.PATIENT)
    assert refused.value.code.value == "invalid_scope"


def test_scopes_read_as_plain_words() -> None:
    assert describe(parse_scope("patient/Observation.rs"), own_record=True) == (
        "See your measurements and test results (patient/Observation.rs)"
    )
    assert describe(parse_scope("patient/*.cruds"), own_record=False) == (
        "See and change the chosen patient's whole record (patient/*.cruds)"
    )
    assert describe(parse_scope("user/Flag.rs"), own_record=False) == (
        "See the alerts of the patients you may see (user/Flag.rs)"
    )


def test_the_answer_keeps_the_redirect_uris_own_query() -> None:
    assert redirect_with("https://a.example/cb?x=1", {"code": "c d", "state": "s"}) == (
        "https://a.example/cb?x=1&code=c+d&state=s"
    )
