"""The care pages' sessions act with exactly the writes those pages make: reading and
searching everything the policy allows, writing care resources, deleting nothing."""

from __future__ import annotations

import pytest

from medmesh.access.policy.scopes import Interaction
from medmesh.web.access import PATIENT_CARE_SCOPES, STAFF_CARE_SCOPES

C, R, U, D, S = (
    Interaction.CREATE,
    Interaction.READ,
    Interaction.UPDATE,
    Interaction.DELETE,
    Interaction.SEARCH,
)


@pytest.mark.parametrize(
    ("resource", "interaction"),
    [
        ("Communication", C),  # answer a thread
        ("Communication", U),  # mark it read
        ("MedicationRequest", C),  # add a medication
        ("MedicationRequest", U),  # stop one, answer a refill
        ("Appointment", C),
        ("Appointment", U),
        ("Observation", R),
        ("Patient", S),
    ],
)
def test_a_clinicians_care_session_makes_the_care_pages_writes(
    resource: str, interaction: Interaction
) -> None:
    assert STAFF_CARE_SCOPES.allows(resource, interaction)


@pytest.mark.parametrize(
    ("resource", "interaction"),
    [
        ("Communication", D),
        ("MedicationRequest", D),
        ("Appointment", D),
        ("Patient", C),
        ("Observation", C),
        ("Consent", C),
        ("Flag", U),
    ],
)
def test_a_clinicians_care_session_writes_nothing_else(
    resource: str, interaction: Interaction
) -> None:
    assert not STAFF_CARE_SCOPES.allows(resource, interaction)


def test_a_patients_care_session_asks_but_does_not_prescribe_or_delete() -> None:
    assert PATIENT_CARE_SCOPES.allows("MedicationRequest", C)  # a refill request
    assert not PATIENT_CARE_SCOPES.allows("MedicationRequest", U)  # approving is the team's
    assert PATIENT_CARE_SCOPES.allows("Communication", U)  # marking read
    for resource in ("Communication", "MedicationRequest", "Appointment", "Observation"):
        assert not PATIENT_CARE_SCOPES.allows(resource, D)
    assert not PATIENT_CARE_SCOPES.allows("Observation", C)
