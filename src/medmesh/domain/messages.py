"""Secure messages between a patient and their care team: threads, messages, attachments.

A thread belongs to one patient; the patient and any member of their care team write in it.
The text, the subject and the attachments are health data: sealed with the patient's key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

MAX_SUBJECT_CHARS = 200
MAX_BODY_CHARS = 10_000


class MessageCategory(StrEnum):
    """What a thread is about (FHIR Communication.category, medmesh's code system)."""

    GENERAL = "general"
    MEDICATION = "medication"
    APPOINTMENT = "appointment"
    RESULTS = "results"


class Side(StrEnum):
    """Who wrote a message: the patient, or someone of their care team."""

    PATIENT = "patient"
    CARE_TEAM = "care-team"

    @property
    def other(self) -> Side:
        return Side.CARE_TEAM if self is Side.PATIENT else Side.PATIENT


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    id: str
    message_id: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    thread_id: str
    patient_id: str
    side: Side
    sender_id: str  # the user id of the patient's account or the clinician
    sender_name: str
    body: str
    sent_at: datetime
    read_at: datetime | None  # when the other side first opened it
    attachments: tuple[AttachmentInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class Thread:
    id: str
    patient_id: str
    subject: str
    category: MessageCategory
    created_at: datetime
    last_message_at: datetime
    unread: int = 0  # messages of the other side the reader has not opened
