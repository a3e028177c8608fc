"""Imaging studies as medmesh keeps them: what a DICOM instance says about itself, the study
it belongs to in the record, and the quarantine for instances no single patient matched."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from medmesh.domain.errors import InvalidRequest


class InvalidInstance(InvalidRequest):
    """A DICOM instance that cannot be stored; the message says why and holds no health data."""


@dataclass(frozen=True, slots=True)
class InstanceHeader:
    """The attributes of one DICOM instance medmesh indexes. Those that identify or describe
    the patient (name, birth date, descriptions) are sealed when stored; UIDs, modality and
    dates are kept in clear for search."""

    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax: str
    patient_id: str
    issuer_of_patient_id: str | None
    patient_name: str
    patient_birth_date: str
    modality: str
    study_started: datetime | None
    study_description: str
    accession_number: str
    series_description: str
    series_number: int | None
    body_part: str
    instance_number: int | None
    slice_position: float | None
    frames: int


@dataclass(frozen=True, slots=True)
class Series:
    id: str
    study_id: str
    uid: str
    modality: str
    number: int | None
    description: str
    body_part: str
    instances: int


@dataclass(frozen=True, slots=True)
class Study:
    id: str
    patient_id: str
    uid: str
    started: datetime | None
    modalities: tuple[str, ...]
    description: str
    accession_number: str
    received_at: datetime
    series: tuple[Series, ...] = ()

    @property
    def instances(self) -> int:
        return sum(s.instances for s in self.series)


@dataclass(frozen=True, slots=True)
class Instance:
    id: str
    series_id: str
    patient_id: str
    sop_instance_uid: str
    sop_class_uid: str
    number: int | None
    transfer_syntax: str
    size: int
    slice_position: float | None
    frames: int


class QuarantineStatus(StrEnum):
    WAITING = "waiting"
    ASSIGNED = "assigned"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class QuarantinedInstance:
    """An instance no single patient matched, kept sealed with a key of its own until an org
    admin assigns it to a patient or rejects it (which destroys that key)."""

    id: str
    status: QuarantineStatus
    reason: str
    source: str
    received_at: datetime
    study_uid: str
    sop_instance_uid: str
    modality: str
