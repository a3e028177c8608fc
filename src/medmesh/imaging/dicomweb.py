"""DICOMweb under /dicomweb (PS3.18): STOW-RS to store, QIDO-RS to search studies, series and
instances, WADO-RS to retrieve instances, their metadata and rendered frames.

Bearer tokens and the same policy decision and audit as FHIR, with resource type ImagingStudy:
a study is read only by those who may read its patient's record (refused as 404), searches
cover the patients the caller may see. Errors are FHIR OperationOutcomes like the rest of the
API; a STOW-RS answer is the DICOM JSON response PS3.18 10.5.3 defines.
"""

from __future__ import annotations

import email.parser
import email.policy
import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydicom import Dataset

from medmesh.access.http import audit_results, authorize, require_principal, search_scope
from medmesh.access.identity.principals import Principal, Role
from medmesh.access.policy.scopes import Interaction
from medmesh.domain.errors import (
    Forbidden,
    InvalidRequest,
    InvalidSearch,
    NotFound,
    UnsupportedMediaType,
)
from medmesh.domain.imaging import Instance, InstanceHeader, InvalidInstance, Series, Study
from medmesh.http.deps import DatabaseDep, provided
from medmesh.http.openapi import ERROR_RESPONSES
from medmesh.imaging.archive import ImagingArchive, Outcome
from medmesh.imaging.dicom_files import read_instance
from medmesh.imaging.find import date_range
from medmesh.imaging.rendering import Undecodable, parse_window, render_frame
from medmesh.store.imaging import ImagingRecords
from medmesh.store.registry import Patients

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"], responses=ERROR_RESPONSES)

DICOM_JSON = "application/dicom+json"
ArchiveDep = Annotated[ImagingArchive, Depends(provided(ImagingArchive))]
_TYPE = "ImagingStudy"
_MAX_RESULTS = 200
_MAX_OFFSET = 100_000  # deeper than anyone pages; a larger number is a 400, not a database error

# DICOM status of a refused instance in a STOW-RS answer (PS3.18 I.2.2, PS3.4 B.2.3)
_PROCESSING_FAILURE = 0x0110
_CANNOT_UNDERSTAND = 0xC000


def _dicom_json(description: str, schema_type: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {DICOM_JSON: {"schema": {"type": schema_type}}},
    }


def _binary(description: str, *media_types: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {m: {"schema": {"type": "string", "format": "binary"}} for m in media_types},
    }


STOW_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _dicom_json("Every instance stored (or held in quarantine)", "object"),
    202: _dicom_json("Some instances stored; FailedSOPSequence lists the others", "object"),
    409: _dicom_json("No instance stored; FailedSOPSequence says why", "object"),
}
QIDO_RESPONSES: dict[int | str, dict[str, Any]] = {200: _dicom_json("Matches", "array")}
INSTANCE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _binary("The instance as stored", "multipart/related")
}
RENDERED_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _binary("The frame, windowed", "image/png", "image/jpeg")
}


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=DICOM_JSON)


def _parts(request_type: str, body: bytes) -> list[bytes]:
    """The bodies of a multipart/related request (RFC 2387) whose parts are application/dicom."""
    if not request_type.lower().startswith("multipart/related"):
        raise UnsupportedMediaType('STOW-RS takes multipart/related; type="application/dicom"')
    head = f"Content-Type: {request_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise InvalidRequest("the multipart body has no parts (is the boundary right?)")
    parts = []
    for part in message.iter_parts():
        if part.get_content_type() != "application/dicom":
            raise UnsupportedMediaType("each part must be application/dicom")
        payload = part.get_payload(decode=True)
        parts.append(payload if isinstance(payload, bytes) else b"")
    if not parts:
        raise InvalidRequest("the request holds no instance")
    return parts


def _referenced(sop_class: str, sop_instance: str, url: str | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    if url:
        item.RetrieveURL = url
    return item


def _failed(sop_class: str, sop_instance: str, status: int, why: str) -> Dataset:
    item = _referenced(sop_class, sop_instance)
    item.FailureReason = status
    item.add_new(0x00741048, "LO", why[:64])  # reason text for people (Failure Reason comment)
    return item


@router.post(
    "/studies",
    summary="STOW-RS: store instances (multipart/related; type=application/dicom)",
    response_class=Response,
    responses=STOW_RESPONSES,
)
async def store_instances(
    request: Request,
    database: DatabaseDep,
    archive: ArchiveDep,
    principal: Principal = Depends(require_principal),
) -> Response:
    if not principal.scopes.allows(_TYPE, Interaction.CREATE):
        raise Forbidden("the token's scopes do not allow storing ImagingStudy data")
    base = _base(request)
    readable: list[tuple[bytes, InstanceHeader]] = []
    failed: list[Dataset] = []
    for content in _parts(request.headers.get("content-type", ""), await request.body()):
        try:
            if len(content) > archive.max_instance_bytes:
                raise InvalidInstance("the instance is larger than the configured limit")
            _, header = read_instance(content)
        except InvalidInstance as error:
            failed.append(_failed("", "", _CANNOT_UNDERSTAND, str(error)))
        else:
            readable.append((content, header))
    # Every patient the request names is decided first: a request that names one the caller
    # may not write to is refused whole (403, audited), so nothing of it is stored.
    async with database.read() as conn:
        patients = Patients(conn)
        matched = [
            await patients.all_by_identifier(h.issuer_of_patient_id, h.patient_id)
            for _, h in readable
        ]
    for matches in matched:
        if len(matches) == 1:
            await authorize(
                request,
                principal,
                patient_id=matches[0].id,
                resource_type=_TYPE,
                interaction=Interaction.CREATE,
                subtype="create",
            )
        elif principal.role is Role.PATIENT:  # patients file images of their own only
            raise Forbidden("a patient may store images of their own record only")
    stored: list[Dataset] = []
    for content, header in readable:
        receipt = await archive.file(header, content, f"stow:{principal.id}"[:80])
        if receipt.outcome is Outcome.QUARANTINED:
            item = _referenced(header.sop_class_uid, header.sop_instance_uid)
            item.add_new(0x00741048, "LO", "held in quarantine: " + (receipt.reason or "")[:40])
        else:
            url = (
                f"{base}/studies/{header.study_uid}/series/{header.series_uid}"
                f"/instances/{header.sop_instance_uid}"
            )
            item = _referenced(header.sop_class_uid, header.sop_instance_uid, url)
        stored.append(item)
    answer = Dataset()
    if stored:
        answer.ReferencedSOPSequence = stored
    if failed:
        answer.FailedSOPSequence = failed
    status = 200 if not failed else (202 if stored else 409)
    return _json(answer.to_json_dict(), status)


# --- QIDO-RS ------------------------------------------------------------------------------


def _study_attributes(study: Study, patient_identifier: str, base: str) -> dict[str, Any]:
    item = Dataset()
    item.StudyInstanceUID = study.uid
    item.StudyDate = study.started.strftime("%Y%m%d") if study.started else ""
    item.StudyTime = study.started.strftime("%H%M%S") if study.started else ""
    item.StudyDescription = study.description
    item.AccessionNumber = study.accession_number
    item.ModalitiesInStudy = list(study.modalities)
    item.PatientID = patient_identifier
    item.NumberOfStudyRelatedSeries = len(study.series)
    item.NumberOfStudyRelatedInstances = study.instances
    item.RetrieveURL = f"{base}/studies/{study.uid}"
    return dict(item.to_json_dict())


def _series_attributes(study: Study, series: Series, base: str) -> dict[str, Any]:
    item = Dataset()
    item.StudyInstanceUID = study.uid
    item.SeriesInstanceUID = series.uid
    item.Modality = series.modality
    if series.number is not None:
        item.SeriesNumber = series.number
    item.SeriesDescription = series.description
    item.BodyPartExamined = series.body_part
    item.NumberOfSeriesRelatedInstances = series.instances
    item.RetrieveURL = f"{base}/studies/{study.uid}/series/{series.uid}"
    return dict(item.to_json_dict())


def _instance_attributes(
    study: Study, series: Series, instance: Instance, base: str
) -> dict[str, Any]:
    item = Dataset()
    item.StudyInstanceUID = study.uid
    item.SeriesInstanceUID = series.uid
    item.SOPInstanceUID = instance.sop_instance_uid
    item.SOPClassUID = instance.sop_class_uid
    if instance.number is not None:
        item.InstanceNumber = instance.number
    item.NumberOfFrames = instance.frames
    item.AvailableTransferSyntaxUID = instance.transfer_syntax
    item.RetrieveURL = (
        f"{base}/studies/{study.uid}/series/{series.uid}/instances/{instance.sop_instance_uid}"
    )
    return dict(item.to_json_dict())


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/dicomweb"


@router.get(
    "/studies",
    summary="QIDO-RS: search studies",
    response_class=Response,
    responses=QIDO_RESPONSES,
)
async def search_studies(
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
    patient_id: Annotated[str | None, Query(alias="PatientID", max_length=64)] = None,
    study_uid: Annotated[str | None, Query(alias="StudyInstanceUID", max_length=64)] = None,
    study_date: Annotated[str | None, Query(alias="StudyDate", max_length=17)] = None,
    modality: Annotated[str | None, Query(alias="ModalitiesInStudy", max_length=16)] = None,
    limit: Annotated[int | None, Query(ge=1, le=_MAX_RESULTS)] = None,
    offset: Annotated[int | None, Query(ge=0, le=_MAX_OFFSET)] = None,
) -> Response:
    count, skip = limit or _MAX_RESULTS, offset or 0
    try:
        started = date_range(study_date or "")
    except InvalidInstance as error:
        raise InvalidSearch(str(error)) from None
    named: list[str] | None = None
    if patient_id:
        async with database.read() as conn:
            named = [p.id for p in await Patients(conn).all_by_identifier(None, patient_id)]
    if named is not None and len(named) == 1:
        decisions = await search_scope(request, principal, named[0], resource_type=_TYPE)
    else:
        decisions = await search_scope(request, principal, None, resource_type=_TYPE)
        if named is not None:
            decisions = {p: d for p, d in decisions.items() if p in named}
    within = [p for p, d in decisions.items() if d.categories is None]
    async with database.read() as conn:
        studies = await ImagingRecords(conn).search(
            within=within, started=started, modality=modality, limit=count, offset=skip
        )
        if study_uid:
            studies = [s for s in studies if s.uid == study_uid]
        identifiers = {
            p.id: p.identifier_value
            for p in await Patients(conn).get_many([s.patient_id for s in studies])
        }
    await audit_results(
        request, principal, decisions, [s.patient_id for s in studies], resource_type=_TYPE
    )
    base = _base(request)
    return _json([_study_attributes(s, identifiers.get(s.patient_id, ""), base) for s in studies])


async def _readable_study(
    request: Request, database: DatabaseDep, principal: Principal, study_uid: str
) -> Study:
    """The study, if the caller may read its patient's record (else 404, audited)."""
    async with database.read() as conn:
        study = await ImagingRecords(conn).study_by_uid(study_uid)
    if study is None:
        raise NotFound("the study is not known")
    decision = await authorize(
        request,
        principal,
        patient_id=study.patient_id,
        resource_type=_TYPE,
        interaction=Interaction.READ,
        subtype="read",
        resource_id=study.id,
        hide=True,
    )
    if decision.categories is not None:
        raise NotFound("the study is not known")
    return study


def _series_of(study: Study, series_uid: str) -> Series:
    for series in study.series:
        if series.uid == series_uid:
            return series
    raise NotFound("the series is not known in this study")


@router.get(
    "/studies/{study_uid}/series",
    summary="QIDO-RS: a study's series",
    response_class=Response,
    responses=QIDO_RESPONSES,
)
async def search_series(
    study_uid: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> Response:
    study = await _readable_study(request, database, principal, study_uid)
    base = _base(request)
    return _json([_series_attributes(study, s, base) for s in study.series])


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances",
    summary="QIDO-RS: a series' instances, in slice order",
    response_class=Response,
    responses=QIDO_RESPONSES,
)
async def search_instances(
    study_uid: str,
    series_uid: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> Response:
    study = await _readable_study(request, database, principal, study_uid)
    series = _series_of(study, series_uid)
    async with database.read() as conn:
        instances = await ImagingRecords(conn).instances(series.id)
    base = _base(request)
    return _json([_instance_attributes(study, series, i, base) for i in instances])


# --- WADO-RS ------------------------------------------------------------------------------


async def _instance_content(
    request: Request,
    database: DatabaseDep,
    principal: Principal,
    study_uid: str,
    series_uid: str,
    instance_uid: str,
) -> bytes:
    study = await _readable_study(request, database, principal, study_uid)
    series = _series_of(study, series_uid)
    async with database.read() as conn:
        records = ImagingRecords(conn)
        instance = await records.instance_by_uid(instance_uid)
        if instance is None or instance.series_id != series.id:
            raise NotFound("the instance is not known in this series")
        return await records.content(instance)


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}",
    summary="WADO-RS: an instance (multipart/related; type=application/dicom)",
    response_class=Response,
    responses=INSTANCE_RESPONSES,
)
async def retrieve_instance(
    study_uid: str,
    series_uid: str,
    instance_uid: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> Response:
    content = await _instance_content(
        request, database, principal, study_uid, series_uid, instance_uid
    )
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    media = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return Response(body, media_type=media)


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}/metadata",
    summary="WADO-RS: an instance's metadata (DICOM JSON, without bulk data)",
    response_class=Response,
    responses=QIDO_RESPONSES,
)
async def retrieve_metadata(
    study_uid: str,
    series_uid: str,
    instance_uid: str,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
) -> Response:
    content = await _instance_content(
        request, database, principal, study_uid, series_uid, instance_uid
    )
    dataset, _ = read_instance(content)
    if "PixelData" in dataset:
        del dataset.PixelData
    # Pixel data left out (it is what WADO-RS frames are for); other values inline (base64).
    return _json([dataset.to_json_dict(bulk_data_threshold=2**31)])


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}/frames/{frame}/rendered",
    summary="WADO-RS: one frame rendered as PNG or JPEG, with window=center,width",
    response_class=Response,
    responses=RENDERED_RESPONSES,
)
async def retrieve_rendered_frame(
    study_uid: str,
    series_uid: str,
    instance_uid: str,
    frame: int,
    request: Request,
    database: DatabaseDep,
    principal: Principal = Depends(require_principal),
    window: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    media_type = "image/jpeg" if "image/jpeg" in request.headers.get("accept", "") else "image/png"
    try:
        chosen = parse_window(window)
    except ValueError as error:
        raise InvalidSearch(str(error)) from None
    content = await _instance_content(
        request, database, principal, study_uid, series_uid, instance_uid
    )
    try:
        rendered = render_frame(content, frame - 1, chosen, media_type)
    except IndexError as error:
        raise NotFound(f"frame {frame} is not in the instance: {error}") from None
    except Undecodable:  # 415 with an OperationOutcome: the viewer shows a placeholder
        raise
    return Response(rendered.image, media_type=media_type, headers={"Cache-Control": "no-store"})
