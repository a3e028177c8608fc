"""A patient's medications (MedicationRequest) and their requests for refills.

The care team keeps the medication list; a patient asks for a refill of an active medication;
the care team approves it (a new MedicationRequest renewing the old one), denies it with a
reason the patient reads, or asks the patient to book a visit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

MAX_NAME_CHARS = 200
MAX_DOSAGE_CHARS = 500
MAX_NOTE_CHARS = 1000
MAX_REFILLS = 12
# A refill request waiting longer than this is overdue: the queue shows it first, highlighted.
OVERDUE_AFTER = timedelta(hours=48)


class MedicationStatus(StrEnum):
    ACTIVE = "active"
    STOPPED = "stopped"  # the care team stopped it
    COMPLETED = "completed"  # renewed by a newer MedicationRequest


class RefillStatus(StrEnum):
    OPEN = "open"
    APPROVED = "approved"
    DENIED = "denied"
    VISIT_REQUESTED = "visit-requested"


@dataclass(frozen=True, slots=True)
class Medication:
    id: str
    patient_id: str
    name: str  # free text, e.g. "Lisinopril 10 mg tablet"
    rxnorm: str | None  # RxNorm concept id, when known
    dosage: str  # e.g. "1 tablet by mouth once a day"
    refills: int
    status: MedicationStatus
    requester_id: str
    requester_name: str
    authored_at: datetime
    prior_id: str | None = None  # the MedicationRequest this one renews
    status_changed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RefillRequest:
    id: str
    patient_id: str
    medication_id: str
    status: RefillStatus
    note: str | None  # the patient's
    requested_at: datetime
    requested_by: str
    decided_at: datetime | None = None
    decided_by: str | None = None
    decided_by_name: str | None = None
    reason: str | None = None  # the care team's, shown to the patient
    renewal_id: str | None = None  # the new MedicationRequest, once approved

    def overdue(self, now: datetime) -> bool:
        return self.status is RefillStatus.OPEN and now - self.requested_at > OVERDUE_AFTER
