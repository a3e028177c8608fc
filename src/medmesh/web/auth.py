"""Signing in and out of the dashboard, and the activity ping that keeps a session alive while
the clinician is using a page that does not otherwise talk to the server."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from medmesh.web import session
from medmesh.web.responses import WebRoute, database
from medmesh.web.session import SignInRequired
from medmesh.web.templating import page

router = APIRouter(route_class=WebRoute, include_in_schema=False)


@router.get("/login")
async def login_form(request: Request, expired: bool = False) -> Response:
    if expired:  # the page's idle timer sent the browser here: end the session for good
        session.sign_out(request)
    else:
        try:
            await session.current_clinician(request, touch=False)
        except SignInRequired:
            pass
        else:
            return RedirectResponse("/", status_code=303)
    return page(request, "login.html", {"expired": expired, "error": None})


@router.post("/login")
async def login(request: Request) -> Response:
    await session.check_csrf(request)
    form = await request.form()
    token = form.get("token")
    record = await session.authenticate(database(request), token if isinstance(token, str) else "")
    if record is None:
        context = {"expired": False, "error": "This token is not valid for the dashboard."}
        return page(request, "login.html", context, status_code=401)
    session.sign_in(request, record)
    return RedirectResponse("/", status_code=303)


@router.post("/logout")
async def logout(request: Request) -> Response:
    await session.check_csrf(request)
    session.sign_out(request)
    return RedirectResponse("/login", status_code=303)


@router.post("/session/activity", status_code=204)
async def activity(request: Request) -> Response:
    """The clinician is at the keyboard (the page reports it at most once a minute)."""
    await session.check_csrf(request)
    await session.current_clinician(request, touch=True)
    return Response(status_code=204)
