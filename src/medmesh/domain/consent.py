"""A patient's consent to share their record beyond the care team (FHIR Consent, privacy).

A consent permits one grantee (a practitioner, i.e. a user account, or a whole organisation)
to see some categories of the record, for some purposes, during a period. Nothing is shared
without one; revoking it takes effect on the next request because every decision reads the
stored state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class GranteeType(StrEnum):
    PRACTITIONER = "Practitioner"  # one user account
    ORGANIZATION = "Organization"  # every clinician and backend service of an organisation
    RELATED_PERSON = "RelatedPerson"  # one caregiver account named by the patient


class ConsentStatus(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"  # revoked by the patient (or on their behalf)


# The data categories a consent can name: FHIR observation-category codes for readings, and
# `alerts` for the alerts (Flags) raised on them. A Patient's demographics and Devices come
# with any grant: a grantee must know whose readings they see and from which device.
CATEGORIES = frozenset({"vital-signs", "activity", "laboratory", "alerts"})
# v3 PurposeOfUse codes a consent may be limited to.
PURPOSES = frozenset({"TREAT", "ETREAT", "HPAYMT", "HOPERAT", "HRESCH", "PATRQT", "PUBHLTH"})


@dataclass(frozen=True, slots=True)
class Consent:
    id: str
    patient_id: str
    status: ConsentStatus
    grantee_type: GranteeType
    grantee_id: str
    categories: frozenset[str]  # empty: every category
    purposes: frozenset[str]  # empty: any purpose
    period_start: datetime | None
    period_end: datetime | None
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None

    def grants(
        self, *, user_id: str | None, organization_id: str, purpose: str, at: datetime
    ) -> bool:
        """Whether this consent lets that user (or organisation) in, for that purpose, now."""
        if self.status is not ConsentStatus.ACTIVE:
            return False
        if self.period_start is not None and at < self.period_start:
            return False
        if self.period_end is not None and at >= self.period_end:
            return False
        if self.purposes and purpose not in self.purposes:
            return False
        if self.grantee_type in (GranteeType.PRACTITIONER, GranteeType.RELATED_PERSON):
            return user_id is not None and self.grantee_id == user_id
        return self.grantee_id == organization_id
