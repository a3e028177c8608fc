"""Repository for secure messages. Subjects, texts and attachment bytes are sealed with the
patient's key, bound to their column and row."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.crypto.envelope import DataKey
from medmesh.domain.messages import (
    AttachmentInfo,
    Message,
    MessageCategory,
    Side,
    Thread,
)
from medmesh.store.database import cipher_of
from medmesh.store.schema import message_attachments, message_threads, messages

_SUBJECT = "message_threads.subject"
_BODY = "messages.body"
_CONTENT = "message_attachments.content"


@dataclass(frozen=True, slots=True)
class NewAttachment:
    id: str
    content_type: str
    content: bytes


@dataclass(frozen=True, slots=True)
class SentBetween:
    """Bounds on when a message was sent: `op` is ge or lt (FHIR `sent` search)."""

    op: str
    at: datetime

    def condition(self) -> ColumnElement[bool]:
        column = messages.c.sent_at
        return column >= self.at if self.op == "ge" else column < self.at


def _thread(row: RowMapping, key: DataKey, unread: int = 0) -> Thread:
    return Thread(
        id=row["id"],
        patient_id=row["patient_id"],
        subject=key.open_text(row["subject"], _SUBJECT, row["id"]),
        category=MessageCategory(row["category"]),
        created_at=row["created_at"],
        last_message_at=row["last_message_at"],
        unread=unread,
    )


def _message(row: RowMapping, key: DataKey, attachments: Sequence[AttachmentInfo] = ()) -> Message:
    return Message(
        id=row["id"],
        thread_id=row["thread_id"],
        patient_id=row["patient_id"],
        side=Side(row["side"]),
        sender_id=row["sender_id"],
        sender_name=row["sender_name"],
        body=key.open_text(row["body"], _BODY, row["id"]),
        sent_at=row["sent_at"],
        read_at=row["read_at"],
        attachments=tuple(attachments),
    )


class Messages:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add_thread(
        self,
        *,
        thread_id: str,
        patient_id: str,
        subject: str,
        category: MessageCategory,
        created_by: str,
        at: datetime,
    ) -> None:
        key = await cipher_of(self._conn).key(patient_id)
        await self._conn.execute(
            message_threads.insert().values(
                id=thread_id,
                patient_id=patient_id,
                subject=key.seal_text(subject, _SUBJECT, thread_id),
                category=category.value,
                created_at=at,
                created_by=created_by,
                last_message_at=at,
            )
        )

    async def add_message(
        self,
        *,
        message_id: str,
        thread_id: str,
        patient_id: str,
        side: Side,
        sender_id: str,
        sender_name: str,
        body: str,
        at: datetime,
        attachments: Sequence[NewAttachment] = (),
    ) -> None:
        key = await cipher_of(self._conn).key(patient_id)
        await self._conn.execute(
            messages.insert().values(
                id=message_id,
                thread_id=thread_id,
                patient_id=patient_id,
                side=side.value,
                sender_id=sender_id,
                sender_name=sender_name,
                body=key.seal_text(body, _BODY, message_id),
                sent_at=at,
            )
        )
        if attachments:
            await self._conn.execute(
                message_attachments.insert(),
                [
                    {
                        "id": a.id,
                        "message_id": message_id,
                        "patient_id": patient_id,
                        "content_type": a.content_type,
                        "size": len(a.content),
                        "content": key.seal(a.content, _CONTENT, a.id),
                    }
                    for a in attachments
                ],
            )
        await self._conn.execute(
            update(message_threads)
            .where(message_threads.c.id == thread_id)
            .values(last_message_at=at)
        )

    async def thread(self, thread_id: str, reader: Side | None = None) -> Thread | None:
        row = (
            (
                await self._conn.execute(
                    select(message_threads).where(message_threads.c.id == thread_id)
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        key = await cipher_of(self._conn).key(row["patient_id"])
        unread = 0
        if reader is not None:
            unread = (await self._unread_by_thread([thread_id], reader)).get(thread_id, 0)
        return _thread(row, key, unread)

    async def threads(self, patient_id: str, reader: Side) -> list[Thread]:
        """The patient's threads, the most recently active first, with the reader's unread."""
        rows = (
            (
                await self._conn.execute(
                    select(message_threads)
                    .where(message_threads.c.patient_id == patient_id)
                    .order_by(message_threads.c.last_message_at.desc(), message_threads.c.id)
                )
            )
            .mappings()
            .all()
        )
        if not rows:
            return []
        key = await cipher_of(self._conn).key(patient_id)
        unread = await self._unread_by_thread([r["id"] for r in rows], reader)
        return [_thread(r, key, unread.get(r["id"], 0)) for r in rows]

    async def _unread_by_thread(self, thread_ids: Sequence[str], reader: Side) -> dict[str, int]:
        query = (
            select(messages.c.thread_id, func.count())
            .where(
                messages.c.thread_id.in_(list(thread_ids)),
                messages.c.side == reader.other.value,
                messages.c.read_at.is_(None),
            )
            .group_by(messages.c.thread_id)
        )
        return {t: int(n) for t, n in (await self._conn.execute(query)).all()}

    async def unread_counts(self, patient_ids: Collection[str], reader: Side) -> dict[str, int]:
        """Per patient (with any), the messages of the other side the reader has not opened."""
        if not patient_ids:
            return {}
        query = (
            select(messages.c.patient_id, func.count())
            .where(
                messages.c.patient_id.in_(list(patient_ids)),
                messages.c.side == reader.other.value,
                messages.c.read_at.is_(None),
            )
            .group_by(messages.c.patient_id)
        )
        return {p: int(n) for p, n in (await self._conn.execute(query)).all()}

    async def mark_read(self, thread_id: str, reader: Side, at: datetime) -> int:
        """Mark the other side's messages of the thread read; returns how many were unread."""
        result = await self._conn.execute(
            update(messages)
            .where(
                messages.c.thread_id == thread_id,
                messages.c.side == reader.other.value,
                messages.c.read_at.is_(None),
            )
            .values(read_at=at)
        )
        return int(result.rowcount or 0)

    async def _attachments(self, message_ids: Sequence[str]) -> dict[str, list[AttachmentInfo]]:
        if not message_ids:
            return {}
        query = (
            select(
                message_attachments.c.id,
                message_attachments.c.message_id,
                message_attachments.c.content_type,
                message_attachments.c.size,
            )
            .where(message_attachments.c.message_id.in_(list(message_ids)))
            .order_by(message_attachments.c.message_id, message_attachments.c.id)
        )
        found: dict[str, list[AttachmentInfo]] = {}
        for row in (await self._conn.execute(query)).mappings():
            found.setdefault(row["message_id"], []).append(
                AttachmentInfo(row["id"], row["message_id"], row["content_type"], row["size"])
            )
        return found

    async def _render(self, rows: Sequence[RowMapping]) -> list[Message]:
        if not rows:
            return []
        keys = await cipher_of(self._conn).keys_for({r["patient_id"] for r in rows})
        attachments = await self._attachments([r["id"] for r in rows])
        return [
            _message(r, keys[r["patient_id"]], attachments.get(r["id"], ()))
            for r in rows
            if r["patient_id"] in keys
        ]

    async def in_thread(self, thread_id: str) -> list[Message]:
        """The thread's messages, oldest first."""
        query = (
            select(messages)
            .where(messages.c.thread_id == thread_id)
            .order_by(messages.c.sent_at, messages.c.id)
        )
        return await self._render((await self._conn.execute(query)).mappings().all())

    async def message(self, message_id: str) -> Message | None:
        query = select(messages).where(messages.c.id == message_id)
        found = await self._render((await self._conn.execute(query)).mappings().all())
        return found[0] if found else None

    async def search(
        self,
        *,
        within: Collection[str],
        sent: Sequence[SentBetween] = (),
        categories: Collection[MessageCategory] = (),
        limit: int,
        offset: int = 0,
        oldest_first: bool = False,
    ) -> list[tuple[Message, Thread]]:
        """Messages of these patients (and their threads), newest first unless asked."""
        if not within:
            return []
        query = (
            select(messages)
            .join(message_threads, message_threads.c.id == messages.c.thread_id)
            .where(messages.c.patient_id.in_(list(within)))
        )
        for bound in sent:
            query = query.where(bound.condition())
        if categories:
            query = query.where(message_threads.c.category.in_([c.value for c in categories]))
        order = (
            (messages.c.sent_at, messages.c.id)
            if oldest_first
            else (messages.c.sent_at.desc(), messages.c.id.desc())
        )
        rows = (
            (await self._conn.execute(query.order_by(*order).limit(limit).offset(offset)))
            .mappings()
            .all()
        )
        found = await self._render(rows)
        threads: dict[str, Thread] = {}
        for message in found:
            if message.thread_id not in threads:
                thread = await self.thread(message.thread_id)
                assert thread is not None  # the message's foreign key holds it
                threads[message.thread_id] = thread
        return [(m, threads[m.thread_id]) for m in found]

    async def attachment(self, attachment_id: str) -> tuple[AttachmentInfo, str, bytes] | None:
        """The attachment, its patient, and its bytes opened."""
        row = (
            (
                await self._conn.execute(
                    select(message_attachments).where(message_attachments.c.id == attachment_id)
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        key = await cipher_of(self._conn).key(row["patient_id"])
        content = key.open(row["content"], _CONTENT, row["id"])
        info = AttachmentInfo(row["id"], row["message_id"], row["content_type"], row["size"])
        return info, row["patient_id"], content
