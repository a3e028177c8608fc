"""The search parameters each FHIR search accepts, declared once: the routers refuse what is
not here and the CapabilityStatement lists what is, so the two cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SearchParam:
    name: str
    type: str  # FHIR search parameter type: token, reference, date, string, number, special
    documentation: str

    def statement(self) -> dict[str, str]:
        """As CapabilityStatement.rest.resource.searchParam."""
        return {"name": self.name, "type": self.type, "documentation": self.documentation}


def names(params: tuple[SearchParam, ...]) -> set[str]:
    return {p.name for p in params}


_COUNT = SearchParam("_count", "number", "page size, at most 1000")
_OFFSET = SearchParam("_offset", "number", "entries to skip (the next/previous links use it)")
_PATIENT = SearchParam("patient", "reference", "the patient the resource is about")
_SUBJECT = SearchParam("subject", "reference", "same as patient")
_PAGED = (_COUNT, _OFFSET)

PATIENT = (
    SearchParam("identifier", "token", "system|value or value"),
    SearchParam("name", "string", "starts-with on family or given name"),
    *_PAGED,
)
DEVICE = (
    SearchParam("patient", "reference", "devices ever assigned to the patient"),
    *_PAGED,
)
OBSERVATION = (
    SearchParam("patient", "reference", "the patient observed"),
    _SUBJECT,
    SearchParam("code", "token", "LOINC code, system|code or code"),
    SearchParam("date", "date", "effective time; prefixes eq, ge, gt, le, lt"),
    SearchParam("_sort", "special", "date or -date"),
    *_PAGED,
)
FLAG = (
    _PATIENT,
    _SUBJECT,
    SearchParam("status", "token", "active or inactive"),
    *_PAGED,
)
CONSENT = (
    SearchParam("patient", "reference", "whose consents"),
    SearchParam("status", "token", "active or inactive"),
    *_PAGED,
)
AUDIT_EVENT = (
    SearchParam("patient", "reference", "the patient whose record was used"),
    SearchParam("date", "date", "when recorded; prefixes eq, ge, gt, le, lt"),
    *_PAGED,
)
COMMUNICATION = (
    _PATIENT,
    _SUBJECT,
    SearchParam("sent", "date", "when sent; prefixes eq, ge, gt, le, lt"),
    SearchParam("category", "token", "general, medication, appointment or results"),
    *_PAGED,
)
IMAGING_STUDY = (
    _PATIENT,
    _SUBJECT,
    SearchParam("started", "date", "when the study started; prefixes eq, ge, gt, le, lt"),
    SearchParam("modality", "token", "a DICOM modality code (MR, CT, US, ...) in the study"),
    *_PAGED,
)
MEDICATION_REQUEST = (
    _PATIENT,
    _SUBJECT,
    SearchParam("status", "token", "active, stopped or completed (comma-separated)"),
    *_PAGED,
)
APPOINTMENT = (
    SearchParam("patient", "reference", "the patient"),
    SearchParam("practitioner", "reference", "the clinician (Practitioner/<user id>)"),
    SearchParam("date", "date", "appointment time; prefixes eq, ge, gt, le, lt"),
    SearchParam("status", "token", "booked or cancelled"),
    *_PAGED,
)
SCHEDULE = (
    SearchParam("actor", "reference", "the clinician (Practitioner/<user id>)"),
    *_PAGED,
)
SLOT = (
    SearchParam("schedule", "reference", "the schedule (required)"),
    SearchParam("start", "date", "slot start; prefixes eq, ge, gt, le, lt (default: 7 days)"),
    SearchParam("status", "token", "free or busy"),
    *_PAGED,
)
SUBSCRIPTION = (
    SearchParam("status", "token", "requested, active, error or off"),
    *_PAGED,
)

# Each searchable type's parameters, as the CapabilityStatement lists them.
BY_TYPE: dict[str, tuple[SearchParam, ...]] = {
    "Patient": PATIENT,
    "Device": DEVICE,
    "Observation": OBSERVATION,
    "Flag": FLAG,
    "Consent": CONSENT,
    "AuditEvent": AUDIT_EVENT,
    "Subscription": SUBSCRIPTION,
    "Communication": COMMUNICATION,
    "ImagingStudy": IMAGING_STUDY,
    "MedicationRequest": MEDICATION_REQUEST,
    "Appointment": APPOINTMENT,
    "Schedule": SCHEDULE,
    "Slot": SLOT,
}
