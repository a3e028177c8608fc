"""Writing secure messages: who writes on which side, what a message may hold, and the live
event that tells the other side (ids only, never the text)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import datetime

from medmesh.access.identity.principals import Principal, Role
from medmesh.care.attachments import AttachmentLimits, clean
from medmesh.domain.errors import Forbidden, InvalidRequest, NotFound
from medmesh.domain.messages import (
    MAX_BODY_CHARS,
    MAX_SUBJECT_CHARS,
    Message,
    MessageCategory,
    Side,
    Thread,
)
from medmesh.events.bus import EventBus
from medmesh.events.model import MESSAGE, Event
from medmesh.store.database import Database
from medmesh.store.messages import Messages, NewAttachment

# Shown to patients wherever they write: messages do not replace alerts or emergency care.
EMERGENCY_NOTICE = (
    "Messages are not watched around the clock. In an emergency, call your local emergency "
    "number (112 or 911) now."
)


def side_of(principal: Principal) -> Side:
    """The side a principal writes on: the patient's own account, or their care team."""
    if principal.role is Role.PATIENT:
        return Side.PATIENT
    if principal.role is Role.CLINICIAN:
        return Side.CARE_TEAM
    raise Forbidden("only the patient and their care team write messages")


def message_text(body: str) -> str:
    text = body.strip()
    if not text:
        raise InvalidRequest("the message is empty; write something to send")
    if len(text) > MAX_BODY_CHARS:
        raise InvalidRequest(f"the message is longer than {MAX_BODY_CHARS} characters")
    return text


def subject_text(subject: str) -> str:
    text = " ".join(subject.split())
    if not text:
        raise InvalidRequest("give the conversation a subject")
    if len(text) > MAX_SUBJECT_CHARS:
        raise InvalidRequest(f"the subject is longer than {MAX_SUBJECT_CHARS} characters")
    return text


def category_of(value: str | None) -> MessageCategory:
    if not value:
        return MessageCategory.GENERAL
    try:
        return MessageCategory(value)
    except ValueError:
        raise InvalidRequest(
            f"category must be one of {', '.join(c.value for c in MessageCategory)}"
        ) from None


async def prepared(files: Sequence[bytes], limits: AttachmentLimits) -> list[NewAttachment]:
    """The attachments as they will be stored (checked, photos re-encoded off the loop)."""
    if len(files) > limits.max_count:
        raise InvalidRequest(f"a message may carry at most {limits.max_count} attachments")
    cleaned = [await asyncio.to_thread(clean, content, limits) for content in files]
    return [NewAttachment(str(uuid.uuid4()), c.content_type, c.content) for c in cleaned]


async def _announce(bus: EventBus, message: Message) -> None:
    await bus.publish(
        Event(
            MESSAGE,
            message.patient_id,
            {"thread_id": message.thread_id, "message_id": message.id, "side": message.side},
        )
    )


async def start_thread(
    database: Database,
    bus: EventBus,
    *,
    patient_id: str,
    sender: Principal,
    subject: str,
    category: MessageCategory,
    body: str,
    attachments: Sequence[NewAttachment],
    at: datetime,
) -> tuple[Thread, Message]:
    thread_id, message_id = str(uuid.uuid4()), str(uuid.uuid4())
    async with database.write() as conn:
        repository = Messages(conn)
        await repository.add_thread(
            thread_id=thread_id,
            patient_id=patient_id,
            subject=subject,
            category=category,
            created_by=sender.id,
            at=at,
        )
        await repository.add_message(
            message_id=message_id,
            thread_id=thread_id,
            patient_id=patient_id,
            side=side_of(sender),
            sender_id=sender.id,
            sender_name=sender.name,
            body=body,
            at=at,
            attachments=attachments,
        )
        thread = await repository.thread(thread_id)
        message = await repository.message(message_id)
    assert thread is not None and message is not None
    await _announce(bus, message)
    return thread, message


async def reply(
    database: Database,
    bus: EventBus,
    *,
    thread: Thread,
    sender: Principal,
    body: str,
    attachments: Sequence[NewAttachment],
    at: datetime,
) -> Message:
    message_id = str(uuid.uuid4())
    side = side_of(sender)
    async with database.write() as conn:
        repository = Messages(conn)
        await repository.add_message(
            message_id=message_id,
            thread_id=thread.id,
            patient_id=thread.patient_id,
            side=side,
            sender_id=sender.id,
            sender_name=sender.name,
            body=body,
            at=at,
            attachments=attachments,
        )
        # Answering a thread is reading it.
        await repository.mark_read(thread.id, side, at)
        message = await repository.message(message_id)
    if message is None:
        raise NotFound("the conversation is not known")
    await _announce(bus, message)
    return message
