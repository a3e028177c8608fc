"""Who and what readings belong to: patients, devices and the assignment of one to the other."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime


@dataclass(frozen=True, slots=True)
class PostalAddress:
    """A patient's home address as a hospital's patient feed sends it (HL7 PID-11)."""

    lines: tuple[str, ...] = ()
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


@dataclass(frozen=True, slots=True)
class Patient:
    id: str
    identifier_system: str
    identifier_value: str
    family: str
    given: str
    birth_date: date | None = None
    gender: str | None = None
    address: PostalAddress | None = None
    phone: str | None = None


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    display_name: str
    manufacturer: str | None = None
    model: str | None = None
    serial_number: str | None = None
    # A bedside monitor shared by the patients of a bed or ward: over HL7 its patient comes
    # from PID by design. Any other device's readings belong to the patient it is assigned to.
    shared_monitor: bool = False


@dataclass(frozen=True, slots=True)
class DeviceAssignment:
    """A device worn by or placed with a patient from `start` until `end` (open when None)."""

    device_id: str
    patient_id: str
    start: datetime
    end: datetime | None = None

    def covers(self, moment: datetime) -> bool:
        return self.start <= moment and (self.end is None or moment < self.end)
