"""The clinician's care forms on the patient page: add a medication to the patient's list and
stop one. The same rules and access decision as the JSON API (care/medications.py,
care/access.py); a refused form shows the patient page again with the reason in plain words
and what was entered, and nothing is stored."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse

from medmesh.access.identity.principals import Principal
from medmesh.access.policy.scopes import Interaction
from medmesh.care import access as care_access
from medmesh.care import medications as prescribing
from medmesh.domain.errors import Conflict, Forbidden, InvalidRequest, NotFound
from medmesh.http.deps import DatabaseDep
from medmesh.store.medications import Medications
from medmesh.web import session
from medmesh.web.access import care_principal
from medmesh.web.pages import render_patient_page
from medmesh.web.responses import WebRoute, plain_refusal
from medmesh.web.session import SessionUser, signed_in

router = APIRouter(route_class=WebRoute, include_in_schema=False)

_REFUSED = (InvalidRequest, Conflict, Forbidden)
MEDICATIONS_ANCHOR = "#medications"


async def _care_team_only(
    request: Request,
    clinician: SessionUser,
    patient_id: str,
    interaction: Interaction,
    medication_id: str | None = None,
) -> Principal:
    """The clinician as they prescribe, if they are on the patient's care team (the decision
    audited); anyone else is answered as if the patient were unknown."""
    principal = care_principal(request, clinician)
    await care_access.decide(
        request,
        principal,
        patient_id,
        "MedicationRequest",
        interaction,
        actors=(care_access.CARE_TEAM,),
        resource_id=medication_id,
        hide=True,
    )
    return principal


def _whole_number(text: str | None, field: str) -> int:
    value = (text or "").strip()
    if not (value.isascii() and value.isdigit()):
        raise InvalidRequest(f"{field} must be a whole number, like 0 or 3")
    return int(value)


@router.post("/patients/{patient_id}/medications")
async def add_medication(
    request: Request,
    patient_id: str,
    database: DatabaseDep,
    clinician: SessionUser = Depends(signed_in),
) -> Response:
    await session.check_csrf(request)
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    principal = await _care_team_only(request, clinician, patient_id, Interaction.CREATE)
    try:
        medication = prescribing.new_medication(
            patient_id=patient_id,
            prescriber=principal,
            name=form.get("name", ""),
            rxnorm=form.get("rxnorm"),
            dosage=form.get("dosage", ""),
            refills=_whole_number(form.get("refills"), "refills"),
            at=datetime.now(UTC),
        )
    except _REFUSED as refusal:
        return await render_patient_page(
            request,
            database,
            clinician,
            patient_id,
            care_error=plain_refusal(refusal),
            care_form=form,
            status_code=400,
        )
    await prescribing.prescribe(database, medication)
    return RedirectResponse(f"/patients/{patient_id}{MEDICATIONS_ANCHOR}", status_code=303)


@router.post("/patients/{patient_id}/medications/{medication_id}/stop")
async def stop_medication(
    request: Request,
    patient_id: str,
    medication_id: str,
    database: DatabaseDep,
    clinician: SessionUser = Depends(signed_in),
) -> Response:
    await session.check_csrf(request)
    async with database.read() as conn:
        medication = await Medications(conn).get(medication_id)
    if medication is None or medication.patient_id != patient_id:
        raise NotFound("This medication is not on this patient's list.")
    await _care_team_only(request, clinician, patient_id, Interaction.UPDATE, medication_id)
    try:
        await prescribing.stop(database, medication, datetime.now(UTC))
    except Conflict as refusal:
        return await render_patient_page(
            request,
            database,
            clinician,
            patient_id,
            care_error=plain_refusal(refusal),
            status_code=409,
        )
    return RedirectResponse(f"/patients/{patient_id}{MEDICATIONS_ANCHOR}", status_code=303)
