"""SMART on FHIR scopes (App Launch 2.0, with the 1.0 `.read`/`.write` forms).

A scope is `context/ResourceType.interactions`: context `patient` (the launch patient's record),
`user` (what the user may see anyway) or `system` (a backend service of an organisation);
interactions are letters of `cruds` (create, read, update, delete, search). A scope only ever
narrows what the policy allows; it never grants access the policy refuses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from medmesh.domain.errors import MedmeshError


class InvalidScope(MedmeshError):
    """A scope string that is not a SMART resource scope."""


class Context(StrEnum):
    PATIENT = "patient"
    USER = "user"
    SYSTEM = "system"


class Interaction(StrEnum):
    CREATE = "c"
    READ = "r"
    UPDATE = "u"
    DELETE = "d"
    SEARCH = "s"


_ALL = frozenset(Interaction)
_V1 = {
    "read": frozenset({Interaction.READ, Interaction.SEARCH}),
    "write": frozenset({Interaction.CREATE, Interaction.UPDATE, Interaction.DELETE}),
    "*": _ALL,
}
_SCOPE = re.compile(r"^(patient|user|system)/([A-Z][A-Za-z]*|\*)\.([a-z*]+)$")
# Scopes that are about identity or launch, not resources: accepted, grant no data access.
_NON_RESOURCE = {
    "openid",
    "fhirUser",
    "profile",
    "launch",
    "launch/patient",
    "offline_access",
    "online_access",
}


@dataclass(frozen=True, slots=True)
class Scope:
    context: Context
    resource_type: str  # a FHIR resource type, or "*"
    interactions: frozenset[Interaction]

    def allows(self, resource_type: str, interaction: Interaction) -> bool:
        return self.resource_type in ("*", resource_type) and interaction in self.interactions

    def __str__(self) -> str:
        letters = "".join(i.value for i in Interaction if i in self.interactions)
        return f"{self.context.value}/{self.resource_type}.{letters}"


def parse_scope(text: str) -> Scope:
    match = _SCOPE.match(text)
    if match is None:
        raise InvalidScope(f"'{text[:80]}' is not a SMART scope (e.g. patient/Observation.rs)")
    context, resource_type, access = match.groups()
    if access in _V1:
        interactions = _V1[access]
    elif re.fullmatch(r"c?r?u?d?s?", access):
        interactions = frozenset(Interaction(letter) for letter in access)
    else:
        raise InvalidScope(
            f"'{text[:80]}': interactions are letters of 'cruds' in that order, or read/write/*"
        )
    return Scope(Context(context), resource_type, interactions)


@dataclass(frozen=True, slots=True)
class Scopes:
    """A set of granted SMART scopes."""

    granted: frozenset[Scope]

    @classmethod
    def parse(cls, text: str) -> Scopes:
        """Parse a space-separated scope string; identity scopes (openid …) are kept out."""
        return cls(frozenset(parse_scope(s) for s in text.split() if s not in _NON_RESOURCE))

    def contexts(self, resource_type: str, interaction: Interaction) -> frozenset[Context]:
        """The contexts in which these scopes allow `interaction` on `resource_type`."""
        return frozenset(
            scope.context for scope in self.granted if scope.allows(resource_type, interaction)
        )

    def allows(self, resource_type: str, interaction: Interaction) -> bool:
        return bool(self.contexts(resource_type, interaction))

    def within(self, ceiling: Scopes) -> Scopes:
        """These scopes narrowed to what `ceiling` allows (a client asking for more than it
        was registered for gets the intersection, as RFC 6749 §3.3 permits). A wildcard asked
        for within a specific ceiling becomes that specific scope: system/*.rs within
        system/Observation.rs is system/Observation.rs."""
        kept: dict[tuple[Context, str], set[Interaction]] = {}
        for scope in self.granted:
            for limit in ceiling.granted:
                if limit.context != scope.context:
                    continue
                if limit.resource_type == "*":
                    resource_type = scope.resource_type
                elif scope.resource_type in ("*", limit.resource_type):
                    resource_type = limit.resource_type
                else:
                    continue
                allowed = scope.interactions & limit.interactions
                if allowed:
                    kept.setdefault((scope.context, resource_type), set()).update(allowed)
        return Scopes(
            frozenset(
                Scope(context, resource_type, frozenset(interactions))
                for (context, resource_type), interactions in kept.items()
            )
        )

    def __str__(self) -> str:
        return " ".join(sorted(str(s) for s in self.granted))
