"""The search parameters each FHIR search accepts, declared once: the routers refuse what is
not here and the CapabilityStatement lists what is, so the two cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass

_BASE = "http://hl7.org/fhir/SearchParameter/"
US_CORE = "http://hl7.org/fhir/us/core/SearchParameter/"


@dataclass(frozen=True, slots=True)
class SearchParam:
    name: str
    type: str  # FHIR search parameter type: token, reference, date, string, number, special
    documentation: str
    definition: str | None = None  # the SearchParameter's canonical URL, when it has one

    def statement(self) -> dict[str, str]:
        """As CapabilityStatement.rest.resource.searchParam."""
        found = {"name": self.name, "type": self.type, "documentation": self.documentation}
        if self.definition is not None:
            found["definition"] = self.definition
        return found


def names(params: tuple[SearchParam, ...]) -> set[str]:
    return {p.name for p in params}


_COUNT = SearchParam("_count", "number", "page size, at most 1000")
_OFFSET = SearchParam("_offset", "number", "entries to skip (the next/previous links use it)")
_PATIENT = SearchParam("patient", "reference", "the patient the resource is about")
_SUBJECT = SearchParam("subject", "reference", "same as patient")
_PAGED = (_COUNT, _OFFSET)
# The result parameters every search below accepts (docs/fhir-api.md#result-parameters).
_RESULTS = (
    *_PAGED,
    SearchParam("_summary", "token", "count, true, data or false"),
    SearchParam("_elements", "token", "top-level elements to return, comma-separated"),
    SearchParam("_total", "token", "none, estimate or accurate (the default): Bundle.total"),
)


def _sort(keys: str) -> SearchParam:
    return SearchParam("_sort", "special", f"comma-separated keys, - for descending: {keys}")


def _include(targets: str) -> SearchParam:
    return SearchParam("_include", "special", targets)


def _revinclude(targets: str) -> SearchParam:
    return SearchParam("_revinclude", "special", targets)


_ID = "_id"
_LAST_UPDATED = "_lastUpdated"

PATIENT = (
    SearchParam(
        _ID, "token", "the Patient's id (comma-separated: any)", US_CORE + "us-core-patient-id"
    ),
    SearchParam(
        "identifier",
        "token",
        "system|value or value (exact, through the identifier's blind index)",
        US_CORE + "us-core-patient-identifier",
    ),
    SearchParam(
        "name",
        "string",
        "case-insensitive starts-with on family or given name",
        US_CORE + "us-core-patient-name",
    ),
    SearchParam(
        "family",
        "string",
        "case-insensitive starts-with on the family name",
        US_CORE + "us-core-patient-family",
    ),
    SearchParam(
        "given",
        "string",
        "case-insensitive starts-with on the given name",
        US_CORE + "us-core-patient-given",
    ),
    SearchParam(
        "birthdate",
        "date",
        "birth date; prefixes eq, ne, gt, lt, ge, le, sa, eb, ap",
        US_CORE + "us-core-patient-birthdate",
    ),
    SearchParam(
        "gender",
        "token",
        "male, female, other or unknown (comma-separated: any)",
        US_CORE + "us-core-patient-gender",
    ),
    _sort("family, given, name, birthdate, gender, _id"),
    _revinclude("Observation:patient, Observation:subject, Device:patient, Flag:patient"),
    *_RESULTS,
)
DEVICE = (
    SearchParam(
        "patient", "reference", "devices ever assigned to the patient", _BASE + "Device-patient"
    ),
    SearchParam(
        "identifier",
        "token",
        "the serial number: urn:medmesh:device-serial|value or value",
        _BASE + "Device-identifier",
    ),
    SearchParam(
        "type",
        "token",
        "the kind of device: system|code or code (SNOMED CT when registered without a system)",
        _BASE + "Device-type",
    ),
    SearchParam(_ID, "token", "the Device's id (comma-separated: any)", _BASE + "Resource-id"),
    _sort("device-name, _id"),
    _include("Device:patient"),
    _revinclude("Observation:device"),
    *_RESULTS,
)
OBSERVATION = (
    SearchParam(
        "patient", "reference", "the patient observed", US_CORE + "us-core-observation-patient"
    ),
    SearchParam("subject", "reference", "same as patient", _BASE + "Observation-subject"),
    SearchParam(
        "category",
        "token",
        "vital-signs, laboratory or activity (system|code; comma-separated: any)",
        US_CORE + "us-core-observation-category",
    ),
    SearchParam(
        "code",
        "token",
        "LOINC code, system|code or code (comma-separated: any; repeated: all)",
        US_CORE + "us-core-observation-code",
    ),
    SearchParam(
        "date",
        "date",
        "effective time; prefixes eq, ne, gt, lt, ge, le, sa, eb, ap; repeat for a range",
        US_CORE + "us-core-observation-date",
    ),
    SearchParam(
        "status",
        "token",
        "final, preliminary, corrected (readings are final; a laboratory result may be "
        "preliminary or corrected; comma-separated: any)",
        US_CORE + "us-core-observation-status",
    ),
    SearchParam(
        _LAST_UPDATED,
        "date",
        "when medmesh received the reading; prefixes as date",
        US_CORE + "us-core-observation-lastupdated",
    ),
    SearchParam("device", "reference", "the device that measured", _BASE + "Observation-device"),
    SearchParam(_ID, "token", "the Observation's id (comma-separated: any)", _BASE + "Resource-id"),
    SearchParam(
        "value-quantity",
        "quantity",
        "[prefix]number[|system|code]: the value, decrypted after the other filters narrow",
        _BASE + "Observation-value-quantity",
    ),
    SearchParam(
        "component-code",
        "token",
        "a component's LOINC code (8480-6 systolic, 8462-4 diastolic)",
        _BASE + "Observation-component-code",
    ),
    SearchParam(
        "combo-code",
        "token",
        "the code or a component's code",
        _BASE + "Observation-combo-code",
    ),
    _sort("date, _lastUpdated, code, patient, device, _id"),
    SearchParam("_cursor", "special", "opaque keyset position; the next link sets it"),
    _include("Observation:patient, Observation:subject, Observation:device"),
    *_RESULTS,
)
LASTN = (
    *(
        p
        for p in OBSERVATION
        if p.name
        in {"patient", "subject", "category", "code", "date", "status", "_lastUpdated", "device"}
    ),
    SearchParam(
        "max", "number", "readings per code and patient, newest first (default 1, at most 100)"
    ),
    *(p for p in _RESULTS if p.name in {"_summary", "_elements"}),
)
FLAG = (
    SearchParam(
        "patient", "reference", "the patient the alert is about", _BASE + "clinical-patient"
    ),
    SearchParam("subject", "reference", "same as patient", _BASE + "Flag-subject"),
    SearchParam("status", "token", "active or inactive"),
    _include("Flag:patient"),
    *_RESULTS,
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
