"""The JSON API of secure messages. Threads belong to one patient; the patient and their care
team read and write them. Every route decides through the access policy (resource type
`Communication`) and leaves an audit record; a thread of a record the caller may not see
answers as unknown."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile

from medmesh.access.http import audit_results, require_principal, search_scope
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
    side_of,
    start_thread,
    subject_text,
)
from medmesh.domain.errors import Forbidden, NotFound
from medmesh.domain.messages import Message, Side, Thread
from medmesh.http.deps import BusDep, DatabaseDep, database_of, provided
from medmesh.http.openapi import ERROR_RESPONSES
from medmesh.store.messages import Messages

router = APIRouter(prefix="/api/v1", tags=["messages"], responses=ERROR_RESPONSES)

RESOURCE = "Communication"

attachment_limits_of = provided(AttachmentLimits)
AttachmentLimitsDep = Annotated[AttachmentLimits, Depends(attachment_limits_of)]


def attachment_url(attachment_id: str) -> str:
    return f"/api/v1/attachments/{attachment_id}"


def message_json(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "thread_id": message.thread_id,
        "side": message.side.value,
        "sender": {"id": message.sender_id, "name": message.sender_name},
        "body": message.body,
        "sent_at": message.sent_at.isoformat(),
        "read_at": message.read_at.isoformat() if message.read_at else None,
        "attachments": [
            {
                "id": a.id,
                "content_type": a.content_type,
                "size": a.size,
                "url": attachment_url(a.id),
            }
            for a in message.attachments
        ],
    }


def thread_json(thread: Thread) -> dict[str, Any]:
    return {
        "id": thread.id,
        "patient_id": thread.patient_id,
        "subject": thread.subject,
        "category": thread.category.value,
        "created_at": thread.created_at.isoformat(),
        "last_message_at": thread.last_message_at.isoformat(),
        "unread": thread.unread,
    }


async def decide(
    request: Request,
    principal: Principal,
    patient_id: str,
    interaction: Interaction,
    *,
    resource_id: str | None = None,
    hide: bool = False,
) -> Decision:
    """The decision on the patient's messages: the patient and their care team write."""
    return await care_access.decide(
        request,
        principal,
        patient_id,
        RESOURCE,
        interaction,
        resource_id=resource_id,
        hide=hide,
        refusal="only the patient and their care team read and write their messages",
    )


async def _thread(
    request: Request, principal: Principal, thread_id: str, interaction: Interaction
) -> Thread:
    async with database_of(request).read() as conn:
        thread = await Messages(conn).thread(thread_id)
    if thread is None:
        raise NotFound("this conversation is not known")
    await decide(
        request, principal, thread.patient_id, interaction, resource_id=thread_id, hide=True
    )
    return thread


def _reader(principal: Principal) -> Side:
    try:
        return side_of(principal)
    except Forbidden:
        return Side.CARE_TEAM  # a service reads as the care team does; it writes nothing


async def _bytes(files: list[UploadFile]) -> list[bytes]:
    return [await f.read() for f in files]


@router.get("/patients/{patient_id}/threads", summary="A patient's message threads")
async def list_threads(
    patient_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    await decide(request, principal, patient_id, Interaction.SEARCH)
    async with database.read() as conn:
        threads = await Messages(conn).threads(patient_id, _reader(principal))
    return {"threads": [thread_json(t) for t in threads]}


@router.post(
    "/threads",
    status_code=201,
    summary="Start a thread with its first message (multipart: patient, subject, body, files)",
)
async def create_thread(
    request: Request,
    database: DatabaseDep,
    bus: BusDep,
    limits: AttachmentLimitsDep,
    patient: Annotated[str, Form(description="The patient id the thread is about")],
    subject: Annotated[str, Form()],
    body: Annotated[str, Form()],
    category: Annotated[str | None, Form()] = None,
    attachment: Annotated[list[UploadFile], File()] = [],  # noqa: B006  (FastAPI copies it)
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    patient_id = patient
    await decide(request, principal, patient_id, Interaction.CREATE)
    text, title, kind = message_text(body), subject_text(subject), category_of(category)
    files = await prepared(await _bytes(attachment), limits)
    thread, message = await start_thread(
        database,
        bus,
        patient_id=patient_id,
        sender=principal,
        subject=title,
        category=kind,
        body=text,
        attachments=files,
        at=datetime.now(UTC),
    )
    return {**thread_json(thread), "messages": [message_json(message)], "notice": EMERGENCY_NOTICE}


@router.get("/threads/{thread_id}", summary="A thread and its messages, oldest first")
async def read_thread(
    thread_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    await _thread(request, principal, thread_id, Interaction.READ)
    async with database.read() as conn:
        found = await Messages(conn).thread(thread_id, _reader(principal))
        messages = await Messages(conn).in_thread(thread_id)
    assert found is not None
    return {**thread_json(found), "messages": [message_json(m) for m in messages]}


@router.post(
    "/threads/{thread_id}/messages",
    status_code=201,
    summary="Answer in a thread (multipart: body, attachments)",
)
async def post_message(
    thread_id: str,
    request: Request,
    database: DatabaseDep,
    bus: BusDep,
    limits: AttachmentLimitsDep,
    body: Annotated[str, Form()],
    attachment: Annotated[list[UploadFile], File()] = [],  # noqa: B006  (FastAPI copies it)
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    thread = await _thread(request, principal, thread_id, Interaction.CREATE)
    text = message_text(body)
    files = await prepared(await _bytes(attachment), limits)
    message = await reply(
        database,
        bus,
        thread=thread,
        sender=principal,
        body=text,
        attachments=files,
        at=datetime.now(UTC),
    )
    return {**message_json(message), "notice": EMERGENCY_NOTICE}


@router.post("/threads/{thread_id}/read", summary="Mark the other side's messages read")
async def mark_thread_read(
    thread_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, int]:
    await _thread(request, principal, thread_id, Interaction.UPDATE)
    side = side_of(principal)
    async with database.write() as conn:
        marked = await Messages(conn).mark_read(thread_id, side, datetime.now(UTC))
    return {"marked": marked}


@router.get(
    "/attachments/{attachment_id}",
    summary="An attachment's content",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "application/pdf": {}}}},
)
async def read_attachment(
    attachment_id: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> Response:
    async with database.read() as conn:
        found = await Messages(conn).attachment(attachment_id)
    if found is None:
        raise NotFound("this attachment is not known")
    info, patient_id, content = found
    await decide(
        request, principal, patient_id, Interaction.READ, resource_id=attachment_id, hide=True
    )
    disposition = "attachment" if info.content_type == PDF else "inline"
    extension = {"image/jpeg": "jpg", "image/png": "png"}.get(info.content_type, "pdf")
    return Response(
        content,
        media_type=info.content_type,
        headers={
            "Content-Disposition": f'{disposition}; filename="attachment.{extension}"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/messages/unread", summary="Unread messages per patient, for the caller")
async def unread_messages(
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> dict[str, Any]:
    """For a patient, their own; for a clinician, the patients whose care team they are in."""
    decisions = await search_scope(request, principal, None, resource_type=RESOURCE)
    patients = [p for p, d in decisions.items() if d.basis in care_access.PATIENT_OR_TEAM]
    async with database.read() as conn:
        counts = await Messages(conn).unread_counts(patients, _reader(principal))
    await audit_results(request, principal, decisions, counts, resource_type=RESOURCE)
    return {"total": sum(counts.values()), "patients": counts}
