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
    # Other identifiers of the same person (system, value): another assigning authority's MRN.
    other_identifiers: tuple[tuple[str, str], ...] = ()


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
    # What kind of device it is, as a FHIR token `system|code` (SNOMED CT by default, e.g.
    # 706172005 physiologic monitoring system); Device.type and `Device?type=` (docs/fhir-api.md).
    type: str | None = None


SNOMED = "http://snomed.info/sct"


def device_type_token(value: str) -> str:
    """A device type as `system|code`: a bare code is SNOMED CT. Raises ValueError."""
    system, bar, code = value.strip().rpartition("|")
    system = system if bar else SNOMED
    if not code or not system or len(system) + len(code) > 190 or "|" in system:
        raise ValueError("a device type is system|code (or a SNOMED CT code)")
    if any(c.isspace() for c in system + code):
        raise ValueError("a device type holds no spaces")
    return f"{system}|{code}"


@dataclass(frozen=True, slots=True)
class DeviceAssignment:
    """A device worn by or placed with a patient from `start` until `end` (open when None)."""

    device_id: str
    patient_id: str
    start: datetime
    end: datetime | None = None

    def covers(self, moment: datetime) -> bool:
        return self.start <= moment and (self.end is None or moment < self.end)
