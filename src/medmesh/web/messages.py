"""Secure messages in the browser: the patient's (`/me/messages`) and the clinician's inbox
(`/inbox`), which updates live (SSE) when a patient writes. Both go through the same care
rules and access decisions as the JSON API (care/); a refused form is shown again with what to
change, and nothing is stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.datastructures import UploadFile

from medmesh.access.identity.principals import Principal
from medmesh.access.policy.decision import Decision
from medmesh.access.policy.scopes import Interaction
from medmesh.care import access as care_access
from medmesh.care.attachments import PDF, AttachmentLimits
from medmesh.care.messages import (
    EMERGENCY_NOTICE,
    category_of,
    message_text,
    prepared,
    reply,
    start_thread,
    subject_text,
)
from medmesh.care.time_entries import note_activity
from medmesh.domain.errors import (
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    UnsupportedContent,
)
from medmesh.domain.messages import MessageCategory, Side, Thread
from medmesh.events.model import MESSAGE, Event
from medmesh.events.sse import sse_events
from medmesh.http.deps import BusDep, DatabaseDep, database_of, provided, settings_of
from medmesh.store.messages import Messages
from medmesh.store.registry import Patients
from medmesh.web import session
from medmesh.web.access import (
    VisiblePatients,
    care_principal,
    panel_patients,
    signed_in_patient,
)
from medmesh.web.live import session_stream
from medmesh.web.responses import WebRoute
from medmesh.web.session import SessionUser, signed_in, signed_in_quietly
from medmesh.web.templating import page

router = APIRouter(route_class=WebRoute, include_in_schema=False)

_REFUSED = (InvalidRequest, PayloadTooLarge, UnsupportedContent, Forbidden)
attachment_limits_of = provided(AttachmentLimits)


async def _files(request: Request) -> tuple[dict[str, str], list[bytes]]:
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    files = [
        await f.read()
        for f in form.getlist("attachment")
        if isinstance(f, UploadFile) and f.filename
    ]
    return fields, files


async def _thread_for(
    request: Request, principal: Principal, thread_id: str, interaction: Interaction
) -> tuple[Thread, Decision]:
    async with database_of(request).read() as conn:
        thread = await Messages(conn).thread(thread_id)
    if thread is None:
        raise NotFound("This conversation does not exist, or is not yours to see.")
    decision = await care_access.decide(
        request,
        principal,
        thread.patient_id,
        "Communication",
        interaction,
        resource_id=thread_id,
        hide=True,
    )
    return thread, decision


async def _thread_page(
    request: Request,
    user: SessionUser,
    thread_id: str,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    principal = care_principal(request, user)
    thread, decision = await _thread_for(request, principal, thread_id, Interaction.READ)
    side = Side.CARE_TEAM if user.is_staff else Side.PATIENT
    # Opening a thread marks it read only for those who answer it: a clinician who reads by
    # consent or break-glass leaves the care team's unread messages unread.
    marks = decision.basis in care_access.PATIENT_OR_TEAM
    if marks:
        await care_access.decide(
            request,
            principal,
            thread.patient_id,
            "Communication",
            Interaction.UPDATE,
            resource_id=thread_id,
            hide=True,
        )
    async with database_of(request).write() as conn:
        if marks:
            await Messages(conn).mark_read(thread_id, side, datetime.now(UTC))
        messages = await Messages(conn).in_thread(thread_id)
        patient = await Patients(conn).get(thread.patient_id) if user.is_staff else None
    context: dict[str, Any] = {
        "user": user,
        "clinician": user if user.is_staff else None,
        "nav": "inbox" if user.is_staff else "messages",
        "thread": thread,
        "messages": messages,
        "patient": patient,
        "notice": None if user.is_staff else EMERGENCY_NOTICE,
        "error": error,
        "action": f"/inbox/threads/{thread_id}" if user.is_staff else f"/me/messages/{thread_id}",
    }
    return page(request, "thread.html", context, status_code)


async def _my_threads_page(
    request: Request,
    user: SessionUser,
    *,
    error: str | None = None,
    status_code: int = 200,
    form: dict[str, str] | None = None,
) -> Response:
    assert user.patient_id is not None
    async with database_of(request).read() as conn:
        threads = await Messages(conn).threads(user.patient_id, Side.PATIENT)
    context = {
        "user": user,
        "nav": "messages",
        "threads": threads,
        "notice": EMERGENCY_NOTICE,
        "categories": list(MessageCategory),
        "error": error,
        "form": form or {},
    }
    return page(request, "me_messages.html", context, status_code)


@router.get("/me/messages")
async def my_messages(request: Request) -> Response:
    user = await signed_in_patient(request)
    await care_access.decide(
        request,
        care_principal(request, user),
        str(user.patient_id),
        "Communication",
        Interaction.SEARCH,
    )
    return await _my_threads_page(request, user)


@router.post("/me/messages")
async def write_to_care_team(request: Request, database: DatabaseDep, bus: BusDep) -> Response:
    await session.check_csrf(request)
    user = await signed_in_patient(request)
    principal = care_principal(request, user)
    fields, files = await _files(request)
    try:
        await care_access.decide(
            request, principal, str(user.patient_id), "Communication", Interaction.CREATE
        )
        title, text = subject_text(fields.get("subject", "")), message_text(fields.get("body", ""))
        kind = category_of(fields.get("category"))
        attachments = await prepared(files, attachment_limits_of(request))
    except _REFUSED as refusal:
        return await _my_threads_page(
            request, user, error=str(refusal), status_code=400, form=fields
        )
    thread, _ = await start_thread(
        database,
        bus,
        patient_id=str(user.patient_id),
        sender=principal,
        subject=title,
        category=kind,
        body=text,
        attachments=attachments,
        at=datetime.now(UTC),
    )
    return RedirectResponse(f"/me/messages/{thread.id}", status_code=303)


async def _answer(
    request: Request, user: SessionUser, thread_id: str, database: Any, bus: Any
) -> Response:
    await session.check_csrf(request)
    principal = care_principal(request, user)
    thread, _ = await _thread_for(request, principal, thread_id, Interaction.READ)
    fields, files = await _files(request)
    try:
        await care_access.decide(
            request,
            principal,
            thread.patient_id,
            "Communication",
            Interaction.CREATE,
            resource_id=thread_id,
        )
        text = message_text(fields.get("body", ""))
        attachments = await prepared(files, attachment_limits_of(request))
    except _REFUSED as refusal:
        return await _thread_page(request, user, thread_id, error=str(refusal), status_code=400)
    now = datetime.now(UTC)
    await reply(
        database,
        bus,
        thread=thread,
        sender=principal,
        body=text,
        attachments=attachments,
        at=now,
    )
    await note_activity(
        database,
        clinician=principal,
        patient_id=thread.patient_id,
        at=now,
        idle=timedelta(minutes=settings_of(request).time_idle_minutes),
    )
    return RedirectResponse(
        f"/inbox/threads/{thread_id}" if user.is_staff else f"/me/messages/{thread_id}",
        status_code=303,
    )


@router.get("/me/messages/{thread_id}")
async def my_thread(request: Request, thread_id: str) -> Response:
    return await _thread_page(request, await signed_in_patient(request), thread_id)


@router.post("/me/messages/{thread_id}")
async def my_answer(
    request: Request, thread_id: str, database: DatabaseDep, bus: BusDep
) -> Response:
    return await _answer(request, await signed_in_patient(request), thread_id, database, bus)


@router.get("/attachments/{attachment_id}")
async def attachment(request: Request, attachment_id: str) -> Response:
    """An attachment, for the signed-in patient or their care team."""
    user = await session.current_user(request, touch=True)
    async with database_of(request).read() as conn:
        found = await Messages(conn).attachment(attachment_id)
    if found is None:
        raise NotFound("This attachment does not exist, or is not yours to see.")
    info, patient_id, content = found
    await care_access.decide(
        request,
        care_principal(request, user),
        patient_id,
        "Communication",
        Interaction.READ,
        resource_id=attachment_id,
        hide=True,
    )
    disposition = "attachment" if info.content_type == PDF else "inline"
    return Response(
        content,
        media_type=info.content_type,
        headers={"Content-Disposition": disposition, "Cache-Control": "no-store"},
    )


async def _inbox_items(request: Request, user: SessionUser) -> list[dict[str, Any]]:
    """The threads of the clinician's patients with unread messages, most recent first."""
    decisions = await panel_patients(request, user)
    mine = [p for p, d in decisions.items() if d.basis == care_access.CARE_TEAM]
    items: list[dict[str, Any]] = []
    async with database_of(request).read() as conn:
        names = {p.id: p for p in await Patients(conn).get_many(mine)}
        for patient_id in mine:
            for thread in await Messages(conn).threads(patient_id, Side.CARE_TEAM):
                items.append({"thread": thread, "patient": names.get(patient_id)})
    items.sort(key=lambda i: (i["thread"].unread == 0, -i["thread"].last_message_at.timestamp()))
    return items


async def inbox_page(
    request: Request, user: SessionUser, *, error: str | None = None, status_code: int = 200
) -> Response:
    from medmesh.web.care import queue_and_visits

    items = await _inbox_items(request, user)
    context = {
        "clinician": user,
        "nav": "inbox",
        "items": items,
        "live": True,
        "error": error,
        **await queue_and_visits(request, user),
    }
    return page(request, "inbox.html", context, status_code)


@router.get("/inbox")
async def inbox(request: Request, user: SessionUser = Depends(signed_in)) -> Response:
    return await inbox_page(request, user)


@router.get("/inbox/items")
async def inbox_items(request: Request, user: SessionUser = Depends(signed_in_quietly)) -> Response:
    return page(request, "_inbox_items.html", {"items": await _inbox_items(request, user)})


@router.get("/inbox/events")
async def inbox_events(
    request: Request, bus: BusDep, user: SessionUser = Depends(signed_in_quietly)
) -> StreamingResponse:
    visible = VisiblePatients(request, user)

    async def wanted(event: Event) -> bool:
        return (
            event.kind == MESSAGE
            and event.patient_id is not None
            and await visible(event.patient_id)
        )

    return session_stream(request, sse_events(bus.subscribe(), wanted, request.is_disconnected))


@router.get("/inbox/threads/{thread_id}")
async def clinician_thread(
    request: Request, thread_id: str, user: SessionUser = Depends(signed_in)
) -> Response:
    return await _thread_page(request, user, thread_id)


@router.post("/inbox/threads/{thread_id}")
async def clinician_answer(
    request: Request,
    thread_id: str,
    database: DatabaseDep,
    bus: BusDep,
    user: SessionUser = Depends(signed_in),
) -> Response:
    return await _answer(request, user, thread_id, database, bus)
