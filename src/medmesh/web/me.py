"""A patient's own page (`/me`): who looked at their record (from the audit log, emergency
accesses with their reason) and, optionally, setting up two-step sign-in (TOTP)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from medmesh.access.identity.accounts import (
    AccountLocked,
    AddressThrottled,
    SignInRefused,
    totp_active,
)
from medmesh.access.policy.decision import EMERGENCY_PURPOSE
from medmesh.http.deps import database_of
from medmesh.store.audit_log import AuditLog
from medmesh.store.consents import BreakGlass
from medmesh.store.users import Users
from medmesh.web import session
from medmesh.web.access import signed_in_patient
from medmesh.web.auth import client_address, enrol_context, moment, restart, sign_in_service
from medmesh.web.caregivers import caregivers_context
from medmesh.web.responses import WebRoute
from medmesh.web.session import SessionUser
from medmesh.web.templating import page

router = APIRouter(route_class=WebRoute, include_in_schema=False)


async def _two_step_active(request: Request, user: SessionUser) -> bool:
    async with database_of(request).read() as conn:
        record = await Users(conn).get(user.user_id)
    return record is not None and totp_active(record)


ACCESSES_SHOWN = 100
_WHAT = {
    "read": "looked at",
    "search": "looked through",
    "update": "updated",
    "create": "added to",
    "export": "exported",
    "break-glass": "opened in an emergency",
    "notify": "was notified of new data in",
}


@dataclass(frozen=True, slots=True)
class Access:
    when: datetime
    who: str
    what: str
    part: str
    emergency: bool
    refused: bool


async def _accesses(request: Request, user: SessionUser) -> tuple[list[Access], list[Any]]:
    """Others' accesses to the patient's record, newest first, and the emergency ones."""
    assert user.patient_id is not None
    async with database_of(request).read() as conn:
        records = await AuditLog(conn).search(patient_id=user.patient_id, count=ACCESSES_SHOWN)
        emergencies = await BreakGlass(conn).for_patient(user.patient_id)
    accesses = [
        Access(
            when=r.recorded,
            who=r.actor_name,
            what=_WHAT.get(r.subtype, r.subtype),
            part=r.resource_type or "record",
            emergency=r.purpose == EMERGENCY_PURPOSE,
            refused=r.outcome != "0",
        )
        for r in records
        if r.actor_id != user.user_id
    ]
    return accesses, list(emergencies)


@router.get("/me")
async def me(request: Request) -> Response:
    user = await signed_in_patient(request)
    accesses, emergencies = await _accesses(request, user)
    context = {
        "user": user,
        "nav": "me",
        "two_step": await _two_step_active(request, user),
        "accesses": accesses,
        "emergencies": emergencies,
        **await caregivers_context(database_of(request), str(user.patient_id)),
    }
    return page(request, "me.html", context)


@router.get("/me/two-step")
async def two_step_form(request: Request) -> Response:
    user = await signed_in_patient(request)
    if await _two_step_active(request, user):
        return RedirectResponse("/me", status_code=303)
    try:
        enrolment = await sign_in_service(request).enrolment(user.user_id, now=moment(request))
    except SignInRefused as refusal:  # locked meanwhile
        return restart(request, str(refusal), 429)
    context = {"user": user, **enrol_context(enrolment, None, "/me/two-step")}
    return page(request, "me_two_step.html", context)


@router.post("/me/two-step")
async def two_step(request: Request) -> Response:
    await session.check_csrf(request)
    user = await signed_in_patient(request)
    service = sign_in_service(request)
    code = (await request.form()).get("code")
    try:
        await service.confirm_enrolment(
            user.user_id,
            code if isinstance(code, str) else "",
            address=client_address(request),
            now=moment(request),
        )
    except (AccountLocked, AddressThrottled) as refusal:
        return restart(request, str(refusal), 429)
    except SignInRefused as refusal:
        try:
            enrolment = await service.enrolment(user.user_id, now=moment(request))
        except SignInRefused as ended:
            return restart(request, str(ended), 429)
        context = {"user": user, **enrol_context(enrolment, str(refusal), "/me/two-step")}
        return page(request, "me_two_step.html", context, status_code=400)
    return RedirectResponse("/me", status_code=303)
