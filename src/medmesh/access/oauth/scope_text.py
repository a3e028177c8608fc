"""SMART scopes in plain words, for the consent screen: what a person lets an app do."""

from __future__ import annotations

from medmesh.access.policy.scopes import Context, Interaction, Scope

_WHAT = {
    "Observation": "measurements and test results",
    "Patient": "details (name, birth date, identifiers)",
    "Device": "devices",
    "Flag": "alerts",
    "Consent": "sharing choices (consents)",
    "AuditEvent": "record of who looked at the record",
    "Communication": "messages",
    "MedicationRequest": "medications",
    "Appointment": "appointments",
    "*": "whole record",
}

IDENTITY_TEXT = {
    "openid": "Know who you are",
    "fhirUser": "Know your account in medmesh (your name and role)",
    "profile": "See your name",
    "launch/patient": "Work on one patient's record, chosen below",
    "offline_access": "Keep its access after you close it, until you revoke it (at most 30 days)",
    "online_access": "Keep its access while you use it (at most 12 hours)",
}


def _verbs(scope: Scope) -> str:
    reads = scope.interactions & {Interaction.READ, Interaction.SEARCH}
    writes = scope.interactions & {Interaction.CREATE, Interaction.UPDATE, Interaction.DELETE}
    if reads and writes:
        return "See and change"
    return "See" if reads else "Change"


def describe(scope: Scope, *, own_record: bool) -> str:
    """One line saying what the scope lets the app do, in the reader's terms."""
    what = _WHAT.get(scope.resource_type, f"{scope.resource_type} records")
    if scope.context is not Context.PATIENT:
        return f"{_verbs(scope)} the {what} of the patients you may see ({scope})"
    whose = "your" if own_record else "the chosen patient's"
    return f"{_verbs(scope)} {whose} {what} ({scope})"
