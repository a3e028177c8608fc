"""The dashboard's side of the access policy: a signed-in person as a `Principal`, and the
checks every page that shows health data makes (through access.http, so they are audited)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from fastapi import Request

from medmesh.access.http import audit_results, authorize, authorized_patients
from medmesh.access.identity.principals import ActorKind, Principal, Role
from medmesh.access.policy.decision import Decision, category_of_code
from medmesh.access.policy.scopes import Interaction, Scopes
from medmesh.web.session import ElsewhereHome, SessionUser, SignInRequired, current_user
from medmesh.web.vitals import VitalSpec

# What a signed-in person's session may do: everything their role and the policy allow.
_STAFF_SCOPES = Scopes.parse("user/*.cruds")
_PATIENT_SCOPES = Scopes.parse("patient/*.rs")
_CAREGIVER_SCOPES = Scopes.parse("user/*.rs")  # reads only; the policy refuses writes too
# What the care pages' sessions may do (the policy still decides each patient, and care/access
# who may act): read and search, plus exactly the writes the care pages make. A clinician
# answers and marks messages read (Communication c, u), keeps the medication list and answers
# refills (MedicationRequest c, u), books and cancels (Appointment c, u); a patient writes and
# marks read, asks for refills (MedicationRequest c) and books and cancels. Nothing deletes.
STAFF_CARE_SCOPES = Scopes.parse(
    "user/*.rs user/Communication.cu user/MedicationRequest.cu user/Appointment.cu"
)
PATIENT_CARE_SCOPES = Scopes.parse(
    "patient/*.rs patient/Communication.cu patient/MedicationRequest.c patient/Appointment.cu"
)
RECHECK_SECONDS = 5.0
_SCOPES = {Role.PATIENT: _PATIENT_SCOPES, Role.CAREGIVER: _CAREGIVER_SCOPES}


def principal_of(request: Request, user: SessionUser) -> Principal:
    """The session's person as the policy sees them."""
    return Principal(
        kind=ActorKind.USER,
        id=user.user_id,
        name=user.display_name,
        role=user.role,
        organization_id=user.organization_id,
        scopes=_SCOPES.get(user.role, _STAFF_SCOPES),
        patient_id=user.patient_id,
        source=request.client.host if request.client is not None else None,
    )


def care_principal(request: Request, user: SessionUser) -> Principal:
    """The session's person as the care pages act: with the care scopes of their side."""
    scopes = {Role.PATIENT: PATIENT_CARE_SCOPES, Role.CAREGIVER: _CAREGIVER_SCOPES}.get(
        user.role, STAFF_CARE_SCOPES
    )
    return dataclasses.replace(principal_of(request, user), scopes=scopes)


async def signed_in_patient(request: Request) -> SessionUser:
    """The signed-in patient; staff and caregivers are sent to their own home page."""
    user = await current_user(request, touch=True)
    if user.role is not Role.PATIENT:
        raise ElsewhereHome(user.home)
    return user


async def open_record(
    request: Request,
    user: SessionUser,
    patient_id: str,
    *,
    resource_type: str = "Observation",
    interaction: Interaction = Interaction.READ,
    subtype: str = "read",
    resource_id: str | None = None,
) -> Decision:
    """Decide and audit one look at a patient's record; not found when refused, naming only
    `resource_id` (what the caller asked for; the patient's id by default)."""
    return await authorize(
        request,
        principal_of(request, user),
        patient_id=patient_id,
        resource_type=resource_type,
        interaction=interaction,
        subtype=subtype,
        resource_id=resource_id or patient_id,
        hide=True,
    )


async def panel_patients(request: Request, user: SessionUser) -> dict[str, Decision]:
    """The patients on this person's panel: care team, break-glass, and consents to the whole
    record. A consent limited to some data categories does not put the patient on the panel,
    whose rows show every vital sign and alert (such a grantee uses the patient page or API)."""
    decisions = await authorized_patients(
        request,
        principal_of(request, user),
        resource_type="Observation",
        interaction=Interaction.SEARCH,
    )
    return {p: d for p, d in decisions.items() if d.categories is None}


def visible_vitals(decision: Decision, vitals: Sequence[VitalSpec]) -> list[VitalSpec]:
    """The charts a decision allows: those whose every code is in an allowed category."""
    return [
        v
        for v in vitals
        if all(
            (category := category_of_code(code)) is not None and decision.allows_category(category)
            for code in v.codes
        )
    ]


async def audit_shown(
    request: Request, user: SessionUser, decisions: dict[str, Decision], patient_ids: list[str]
) -> None:
    """Record that these patients' data were shown (a panel page or refresh)."""
    await audit_results(
        request,
        principal_of(request, user),
        decisions,
        patient_ids,
        resource_type="Observation",
    )


class VisiblePatients:
    """The set of patients a live stream may carry, decided again every few seconds so a
    revoked consent or care-team change, or the end of the session (sign-out elsewhere, a
    password reset, disablement, lockout), stops the flow without a reconnect."""

    def __init__(self, request: Request, user: SessionUser) -> None:
        self._request = request
        self._user = user
        self._ids: set[str] = set()
        self._checked = float("-inf")

    async def __call__(self, patient_id: str) -> bool:
        if time.monotonic() - self._checked > RECHECK_SECONDS:
            try:
                await current_user(self._request, touch=False)
            except SignInRequired:
                self._ids = set()
            else:
                self._ids = set(await panel_patients(self._request, self._user))
            self._checked = time.monotonic()
        return patient_id in self._ids
