"""Caregivers in the web UI (docs/paging.md#caregivers): the patient invites one from `/me`
(the single-use code is shown once) and revokes them there; the caregiver accepts at
`/caregiver/accept` (their own account: username, name, password, an e-mail address for their
pages; TOTP is set up at the first sign-in), then sees the people they care for at
`/caregiving` and each one's readings, as far as that person's consent allows, with the
patient's own readings page. Every look is decided by the access policy and audited."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from medmesh.access.http import audit_results, authorized_patients, record
from medmesh.access.identity.principals import ActorKind, Principal, Role
from medmesh.access.policy.scopes import Interaction, Scopes
from medmesh.care import caregivers
from medmesh.domain.consent import CATEGORIES
from medmesh.domain.errors import MedmeshError, NotFound
from medmesh.http.deps import DatabaseDep
from medmesh.paging.channels import ChannelKind, checked_target
from medmesh.paging.repository import Channels
from medmesh.store.registry import Patients
from medmesh.web import session
from medmesh.web.access import principal_of, signed_in_patient
from medmesh.web.readings import readings_context
from medmesh.web.responses import WebRoute, problem
from medmesh.web.templating import page

router = APIRouter(route_class=WebRoute, include_in_schema=False)

CATEGORY_WORDS = {
    "vital-signs": "Vital signs (glucose, heart rate, blood pressure, …)",
    "activity": "Activity (steps, sleep)",
    "laboratory": "Laboratory results",
    "alerts": "Alerts raised on the readings",
}
ALERT_TYPE_WORDS = {
    "critical": "Critical alerts (e.g. urgent low glucose)",
    "urgent": "Urgent alerts",
    "warning": "Warnings",
}
assert set(CATEGORY_WORDS) == CATEGORIES and set(ALERT_TYPE_WORDS) == caregivers.ALERT_TYPES


def _now() -> datetime:
    return datetime.now(UTC)


def _chosen(form: Any, name: str) -> set[str]:
    return {v for v in form.getlist(name) if isinstance(v, str)}


async def caregivers_context(database: DatabaseDep, patient_id: str) -> dict[str, Any]:
    """What `/me` shows of the patient's caregivers, and the invitation form's choices."""
    return {
        "caregivers": await caregivers.caregivers_of(database, patient_id),
        "category_words": CATEGORY_WORDS,
        "alert_type_words": ALERT_TYPE_WORDS,
    }


@router.post("/me/caregivers")
async def invite(request: Request, database: DatabaseDep) -> Response:
    await session.check_csrf(request)
    user = await signed_in_patient(request)
    form = await request.form()
    try:
        invited = await caregivers.invite(
            database,
            patient_id=str(user.patient_id),
            by=user.user_id,
            categories=_chosen(form, "category"),
            alert_types=_chosen(form, "alert_type"),
            now=_now(),
        )
    except ValueError as refused:
        return problem(request, 400, "Invitation not made", f"{refused}.")
    await _audit_consent(request, user, Interaction.CREATE, "create", "invitation")
    context = {
        "user": user,
        "nav": "me",
        "code": invited.code,
        "link": f"{str(request.base_url).rstrip('/')}/caregiver/accept?code={invited.code}",
        "expires_at": invited.expires_at,
    }
    return page(request, "caregiver_invited.html", context)


@router.post("/me/caregivers/{link_id}/revoke")
async def revoke(request: Request, link_id: str, database: DatabaseDep) -> Response:
    await session.check_csrf(request)
    user = await signed_in_patient(request)
    try:
        await caregivers.revoke(
            database, patient_id=str(user.patient_id), link_id=link_id, now=_now()
        )
    except NotFound:
        return problem(request, 404, "Not found", "No such caregiver.")
    await _audit_consent(request, user, Interaction.UPDATE, "update", link_id)
    return RedirectResponse("/me", status_code=303)


async def _audit_consent(
    request: Request,
    user: session.SessionUser,
    interaction: Interaction,
    subtype: str,
    resource_id: str,
) -> None:
    """Consent management by the patient, audited like `/fhir/Consent` (basis `self`)."""
    await record(
        request,
        principal_of(request, user),
        interaction=interaction,
        permitted=True,
        patient_id=user.patient_id,
        resource_type="Consent",
        subtype=subtype,
        basis="self",
        resource_id=f"caregiver/{resource_id}"[:64],
    )


def _accept_form(
    request: Request, code: str, *, error: str | None = None, status: int = 200, **fields: str
) -> Response:
    context = {"code": code, "error": error, "fields": fields}
    return page(request, "caregiver_accept.html", context, status_code=status)


@router.get("/caregiver/accept")
async def accept_form(request: Request, code: str = "") -> Response:
    return _accept_form(request, code)


@router.post("/caregiver/accept")
async def accept(request: Request, database: DatabaseDep) -> Response:
    await session.check_csrf(request)
    form = await request.form()
    field = {k: str(form.get(k) or "") for k in ("code", "username", "display_name", "email")}
    password = str(form.get("password") or "")
    try:
        email = checked_target(ChannelKind.EMAIL, field["email"])
        accepted = await caregivers.accept(
            database,
            code=field["code"],
            username=field["username"],
            display_name=field["display_name"],
            password=password,
            now=_now(),
        )
    except (ValueError, MedmeshError) as refused:
        code = field.pop("code")
        status = 410 if isinstance(refused, caregivers.InvitationInvalid) else 400
        return _accept_form(request, code, error=f"{refused}.", status=status, **field)
    async with database.write() as conn:
        await Channels(conn).add(accepted.user_id, ChannelKind.EMAIL, email, "e-mail", _now())
    # The consent the patient's invitation offered is made now, by the caregiver accepting it.
    caregiver = Principal(
        kind=ActorKind.USER,
        id=accepted.user_id,
        name=field["display_name"].strip(),
        role=Role.CAREGIVER,
        organization_id=accepted.organization_id,
        scopes=Scopes(frozenset()),
        source=request.client.host if request.client is not None else None,
    )
    await record(
        request,
        caregiver,
        interaction=Interaction.CREATE,
        permitted=True,
        patient_id=accepted.patient_id,
        resource_type="Consent",
        subtype="create",
        basis="invitation",
        resource_id=accepted.consent_id,
    )
    return RedirectResponse("/login", status_code=303)


@router.get("/caregiving")
async def caregiving(request: Request, database: DatabaseDep) -> Response:
    user = await session.signed_in_as(request, Role.CAREGIVER)
    principal = principal_of(request, user)
    decisions = await authorized_patients(
        request, principal, resource_type="Patient", interaction=Interaction.SEARCH
    )
    async with database.read() as conn:
        people = await Patients(conn).get_many(sorted(decisions))
    await audit_results(
        request, principal, decisions, [p.id for p in people], resource_type="Patient"
    )
    context = {"user": user, "nav": "caregiving", "people": people}
    return page(request, "caregiving.html", context)


@router.get("/caregiving/{patient_id}")
async def cared_for(request: Request, patient_id: str, database: DatabaseDep) -> Response:
    user = await session.signed_in_as(request, Role.CAREGIVER)
    context = await readings_context(request, database, user, patient_id)
    async with database.read() as conn:
        person = await Patients(conn).get(patient_id)
    context |= {
        "nav": "caregiving",
        "readings_url": f"/caregiving/{patient_id}",
        "whose": f"{person.given} {person.family}",
    }
    return page(request, "me_readings.html", context)
