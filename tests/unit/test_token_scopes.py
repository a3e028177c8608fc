"""Which SMART scopes a token's holder may get, and how a backend service's request is narrowed
to what its client was registered for."""

from __future__ import annotations

import pytest

from medmesh.access.identity.principals import Role
from medmesh.access.oauth.backend_services import OAuthError, OAuthErrorCode, narrowed_scopes
from medmesh.access.policy.grants import ScopeNotAllowed, grantable_scopes
from medmesh.access.policy.scopes import InvalidScope, Scopes


@pytest.mark.parametrize(
    ("role", "text"),
    [
        (Role.PATIENT, "patient/Observation.rs patient/Patient.r"),
        (Role.CLINICIAN, "user/*.rs"),
        (Role.CLINICIAN, "user/Observation.rs patient/Observation.rs"),
        (Role.ORG_ADMIN, "user/Patient.rs"),
        (Role.SYSTEM, "system/*.rs"),
        (Role.SYSTEM, "openid system/Observation.read"),
    ],
)
def test_each_role_may_hold_scopes_of_its_own_contexts(role: Role, text: str) -> None:
    assert grantable_scopes(role, text, holder="the holder").granted


@pytest.mark.parametrize(
    ("role", "text", "message"),
    [
        (Role.PATIENT, "user/*.rs", "patient/ scopes only, not user/"),
        (Role.PATIENT, "system/Observation.rs", "patient/ scopes only, not system/"),
        (Role.CLINICIAN, "system/*.rs", "patient/ or user/ scopes only, not system/"),
        (Role.ORG_ADMIN, "patient/Observation.rs", "user/ scopes only"),
        (Role.SYSTEM, "user/*.rs patient/Observation.rs", "not patient/Observation.rs, user/"),
    ],
)
def test_a_scope_of_another_context_is_refused_and_named(
    role: Role, text: str, message: str
) -> None:
    with pytest.raises(ScopeNotAllowed, match=message):
        grantable_scopes(role, text, holder="the holder")


@pytest.mark.parametrize("text", ["", "   ", "openid fhirUser"])
def test_a_token_without_any_resource_scope_is_refused(text: str) -> None:
    with pytest.raises(InvalidScope, match="at least one SMART resource scope"):
        grantable_scopes(Role.CLINICIAN, text, holder="x")


@pytest.mark.parametrize("text", ["user/observation.rs", "user/Observation.sr", "Observation.rs"])
def test_a_malformed_scope_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(InvalidScope, match=r"e\.g\. patient/Observation\.rs|letters of 'cruds'"):
        grantable_scopes(Role.CLINICIAN, text, holder="x")


CEILING = Scopes.parse("system/Observation.rs system/Patient.rs")


@pytest.mark.parametrize(
    ("requested", "granted"),
    [
        ("system/Observation.rs", "system/Observation.rs"),
        ("system/Observation.cruds", "system/Observation.rs"),
        ("system/Observation.read", "system/Observation.rs"),
        ("system/Observation.r system/Device.rs", "system/Observation.r"),
        ("system/*.rs", "system/Observation.rs system/Patient.rs"),
        ("system/*.s", "system/Observation.s system/Patient.s"),
    ],
)
def test_a_request_is_narrowed_to_the_clients_ceiling(requested: str, granted: str) -> None:
    assert str(narrowed_scopes(requested, CEILING)) == granted


def test_a_wildcard_ceiling_keeps_the_specific_request() -> None:
    wide = Scopes.parse("system/*.rs")
    assert str(narrowed_scopes("system/Flag.rs system/Observation.c", wide)) == "system/Flag.rs"


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        ("system/Device.rs", "none of the requested scopes is within"),
        ("system/Observation.cud", "none of the requested scopes is within"),
        ("patient/Observation.rs", "system/ scopes only, not patient/Observation.rs"),
        ("system/Observation.rs user/*.rs", "system/ scopes only, not user/"),
        ("system/observation.rs", "not a SMART scope"),
        ("openid", "none of the requested scopes is within"),
    ],
)
def test_a_request_with_nothing_grantable_is_invalid_scope(requested: str, message: str) -> None:
    with pytest.raises(OAuthError, match=message) as refused:
        narrowed_scopes(requested, CEILING)
    assert refused.value.code is OAuthErrorCode.INVALID_SCOPE
    assert refused.value.status_code == 400
