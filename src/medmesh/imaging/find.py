"""C-FIND at patient and study level over the filed studies (PS3.4 C.6.1/C.6.2, the keys a
modality worklist client or a viewer commonly sends). Allow-listed AEs are systems of the
organisation that runs medmesh, trusted like its HL7 senders: they may query any patient's
studies (docs/imaging.md). Quarantined instances are never found."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydicom import Dataset

from medmesh.domain.imaging import InvalidInstance, Study
from medmesh.domain.registry import Patient
from medmesh.store.database import Database
from medmesh.store.imaging import ImagingRecords, StartedBetween
from medmesh.store.registry import Patients

MAX_MATCHES = 500


def date_range(value: str) -> list[StartedBetween]:
    """A DICOM DA match: `YYYYMMDD`, `A-B`, `A-` or `-B`."""
    value = value.strip()
    if not value:
        return []
    start, dash, end = value.partition("-")
    bounds = []
    try:
        if start:
            first = datetime.strptime(start, "%Y%m%d").replace(tzinfo=UTC)
            bounds.append(StartedBetween("ge", first))
            if not dash:
                bounds.append(StartedBetween("lt", first + timedelta(days=1)))
        if end:
            last = datetime.strptime(end, "%Y%m%d").replace(tzinfo=UTC)
            bounds.append(StartedBetween("lt", last + timedelta(days=1)))
    except ValueError:
        raise InvalidInstance("StudyDate is not a DICOM date or date range") from None
    return bounds


def _text(identifier: Dataset, keyword: str) -> str:
    value = identifier.get(keyword)
    return "" if value is None else str(value).strip()


def _name(patient: Patient) -> str:
    return f"{patient.family}^{patient.given}"


def _study_match(study: Study, patient: Patient, level: str) -> Dataset:
    match = Dataset()
    match.QueryRetrieveLevel = level
    match.PatientID = patient.identifier_value
    match.PatientName = _name(patient)
    match.PatientBirthDate = patient.birth_date.strftime("%Y%m%d") if patient.birth_date else ""
    if level == "STUDY":
        match.StudyInstanceUID = study.uid
        match.StudyDate = study.started.strftime("%Y%m%d") if study.started else ""
        match.StudyTime = study.started.strftime("%H%M%S") if study.started else ""
        match.ModalitiesInStudy = list(study.modalities)
        match.StudyDescription = study.description
        match.AccessionNumber = study.accession_number
        match.NumberOfStudyRelatedSeries = len(study.series)
        match.NumberOfStudyRelatedInstances = study.instances
    return match


async def find_matches(database: Database, identifier: Dataset) -> list[Dataset]:
    level = _text(identifier, "QueryRetrieveLevel").upper()
    if level not in ("PATIENT", "STUDY"):
        raise InvalidInstance("QueryRetrieveLevel must be PATIENT or STUDY")
    patient_id = _text(identifier, "PatientID").replace("*", "")
    study_uids = {u for u in _text(identifier, "StudyInstanceUID").split("\\") if u}
    modality = _text(identifier, "ModalitiesInStudy").replace("*", "") or None
    started = date_range(_text(identifier, "StudyDate"))
    async with database.read() as conn:
        patients = Patients(conn)
        if patient_id:
            issuer = _text(identifier, "IssuerOfPatientID") or None
            within = await patients.all_by_identifier(issuer, patient_id)
        else:
            within = await patients.with_imaging_studies()
        by_id = {p.id: p for p in within}
        studies = await ImagingRecords(conn).search(
            within=list(by_id),
            started=started,
            modality=modality,
            limit=MAX_MATCHES,
        )
    if study_uids:
        studies = [s for s in studies if s.uid in study_uids]
    if level == "PATIENT":
        seen: dict[str, Study] = {}
        for study in studies:
            seen.setdefault(study.patient_id, study)
        return [_study_match(s, by_id[p], level) for p, s in seen.items()]
    return [_study_match(s, by_id[s.patient_id], level) for s in studies]
