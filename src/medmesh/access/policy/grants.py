"""Which SMART scopes a bearer may be granted: the context of a scope follows who holds it.

A patient holds `patient/` scopes (their own record), staff `user/` scopes (what the policy
lets them see) and, with a launch patient, `patient/` scopes; `system/` scopes belong to
backend services only: OAuth clients of partner organisations and service tokens.
"""

from __future__ import annotations

from medmesh.access.identity.principals import Role
from medmesh.access.policy.scopes import Context, InvalidScope, Scopes
from medmesh.domain.errors import MedmeshError


class ScopeNotAllowed(MedmeshError):
    """Scopes that the holder of a token may not be granted; the message says which."""


ALLOWED_CONTEXTS: dict[Role, frozenset[Context]] = {
    Role.PATIENT: frozenset({Context.PATIENT}),
    Role.CLINICIAN: frozenset({Context.USER, Context.PATIENT}),
    # An org-admin reads no health data; user/ scopes only ever narrow what the policy allows.
    Role.ORG_ADMIN: frozenset({Context.USER}),
    Role.SYSTEM: frozenset({Context.SYSTEM}),
    # A caregiver's user/ scopes reach only what their patients' consents grant, reads only.
    Role.CAREGIVER: frozenset({Context.USER}),
}


def _describe(contexts: frozenset[Context]) -> str:
    return " or ".join(f"{c.value}/" for c in Context if c in contexts)


def grantable_scopes(role: Role, text: str, *, holder: str) -> Scopes:
    """Parse `text` (space-separated SMART scopes) and check that a `holder` (e.g. "a patient
    account") of `role` may hold every one of them. Raises InvalidScope for a malformed scope
    and ScopeNotAllowed for a scope of the wrong context or an empty request."""
    scopes = Scopes.parse(text)  # raises InvalidScope, naming the bad scope
    if not scopes.granted:
        raise InvalidScope("give at least one SMART resource scope, e.g. user/Observation.rs")
    allowed = ALLOWED_CONTEXTS[role]
    refused = sorted(str(s) for s in scopes.granted if s.context not in allowed)
    if refused:
        raise ScopeNotAllowed(
            f"{holder} may hold {_describe(allowed)} scopes only, not {', '.join(refused)}"
        )
    return scopes
