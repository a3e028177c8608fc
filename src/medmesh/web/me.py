"""A patient's own page (`/me`): who is signed in and, optionally, setting up two-step sign-in
(TOTP). The lead adds the patient's readings and who looked at their record here."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from medmesh.access.accounts import AccountLocked, AddressThrottled, SignInRefused, totp_active
from medmesh.store.users import Users
from medmesh.web import session
from medmesh.web.auth import client_address, enrol_context, moment, restart, sign_in_service
from medmesh.web.responses import WebRoute, database
from medmesh.web.session import ElsewhereHome, SessionUser
from medmesh.web.templating import page

router = APIRouter(route_class=WebRoute, include_in_schema=False)


async def _patient(request: Request) -> SessionUser:
    user = await session.current_user(request, touch=True)
    if user.is_staff:
        raise ElsewhereHome(user.home)
    return user


async def _two_step_active(request: Request, user: SessionUser) -> bool:
    async with database(request).read() as conn:
        record = await Users(conn).get(user.user_id)
    return record is not None and totp_active(record)


@router.get("/me")
async def me(request: Request) -> Response:
    user = await _patient(request)
    context = {"user": user, "nav": "me", "two_step": await _two_step_active(request, user)}
    return page(request, "me.html", context)


@router.get("/me/two-step")
async def two_step_form(request: Request) -> Response:
    user = await _patient(request)
    if await _two_step_active(request, user):
        return RedirectResponse("/me", status_code=303)
    try:
        enrolment = await sign_in_service(request).enrolment(user.user_id, now=moment())
    except SignInRefused as refusal:  # locked meanwhile
        return restart(request, str(refusal), 429)
    context = {"user": user, **enrol_context(enrolment, None, "/me/two-step")}
    return page(request, "me_two_step.html", context)


@router.post("/me/two-step")
async def two_step(request: Request) -> Response:
    await session.check_csrf(request)
    user = await _patient(request)
    service = sign_in_service(request)
    code = (await request.form()).get("code")
    try:
        await service.confirm_enrolment(
            user.user_id,
            code if isinstance(code, str) else "",
            address=client_address(request),
            now=moment(),
        )
    except (AccountLocked, AddressThrottled) as refusal:
        return restart(request, str(refusal), 429)
    except SignInRefused as refusal:
        try:
            enrolment = await service.enrolment(user.user_id, now=moment())
        except SignInRefused as ended:
            return restart(request, str(ended), 429)
        context = {"user": user, **enrol_context(enrolment, str(refusal), "/me/two-step")}
        return page(request, "me_two_step.html", context, status_code=400)
    return RedirectResponse("/me", status_code=303)
