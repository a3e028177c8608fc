"""Imaging on the dashboard: the studies on a patient's page (with a thumbnail of each series)
and a viewer that shows one series a slice at a time.

The viewer draws frames the server renders (imaging/rendering.py) rather than decoding DICOM
in the browser: the same decoders, window arithmetic and policy decision as WADO-RS rendered,
no JavaScript codec bundle to vendor, and pixels leave only as the frame on screen. Each frame
asked for is one policy decision and one audit record. Window/level changes re-render the frame
(debounced in the page); docs/imaging.md says why this was chosen over a browser viewer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.access.policy.decision import Decision
from medmesh.domain.errors import NotFound
from medmesh.domain.imaging import Instance, Series, Study
from medmesh.http.deps import DatabaseDep
from medmesh.imaging.rendering import Undecodable, parse_window, render_frame
from medmesh.store.imaging import ImagingRecords
from medmesh.store.registry import Patients
from medmesh.web.access import open_record
from medmesh.web.responses import WebRoute
from medmesh.web.session import SessionUser, signed_in, signed_in_quietly
from medmesh.web.templating import page

router = APIRouter(route_class=WebRoute, include_in_schema=False)

MAX_STUDIES = 20
THUMBNAIL_SIDE = 128

# Window presets a radiologist expects (centre, width in HU for CT); "auto" is the file's own.
PRESETS: dict[str, list[tuple[str, float, float]]] = {
    "CT": [("Soft tissue", 40, 400), ("Lung", -600, 1500), ("Bone", 300, 1500), ("Brain", 40, 80)],
}


@dataclass(frozen=True, slots=True)
class Slice:
    instance_id: str
    frame: int  # 0-based frame of the instance
    position: float | None
    number: int | None


async def patient_studies(conn: AsyncConnection, patient_id: str) -> list[Study]:
    """The patient's studies for their page, newest first."""
    return await ImagingRecords(conn).search(within=[patient_id], limit=MAX_STUDIES)


def may_see_imaging(decision: Decision) -> bool:
    """A consent limited to some categories covers no imaging (like messages)."""
    return decision.categories is None


async def _open(request: Request, user: SessionUser, patient_id: str, resource_id: str) -> None:
    decision = await open_record(
        request, user, patient_id, resource_type="ImagingStudy", resource_id=resource_id
    )
    if not may_see_imaging(decision):
        raise NotFound("the study is not known")


def slices(instances: list[Instance]) -> list[Slice]:
    """Every frame of a series in viewing order (instances come in slice order)."""
    return [
        Slice(i.id, frame, i.slice_position, i.number)
        for i in instances
        for frame in range(i.frames)
    ]


@router.get("/patients/{patient_id}/imaging/{study_id}")
async def viewer(
    request: Request,
    database: DatabaseDep,
    patient_id: str,
    study_id: str,
    clinician: SessionUser = Depends(signed_in),
) -> Response:
    await _open(request, clinician, patient_id, study_id)
    async with database.read() as conn:
        records = ImagingRecords(conn)
        study = await records.study(study_id)
        if study is None or study.patient_id != patient_id or not study.series:
            raise NotFound("the study is not known")
        patient = await Patients(conn).get(patient_id)
        wanted = request.query_params.get("series")
        series = next((s for s in study.series if s.id == wanted), study.series[0])
        frames = slices(await records.instances(series.id))
    config: dict[str, Any] = {
        "patient": patient_id,
        "series": series.id,
        "slices": [
            {
                "instance": s.instance_id,
                "frame": s.frame,
                "position": s.position,
                "number": s.number,
            }
            for s in frames
        ],
        "presets": [
            {"label": label, "center": c, "width": w}
            for label, c, w in PRESETS.get(series.modality, [])
        ],
    }
    return page(
        request,
        "imaging_viewer.html",
        {
            "clinician": clinician,
            "patient": patient,
            "study": study,
            "series": series,
            "viewer_config": config,
        },
    )


async def _series_of_patient(conn: AsyncConnection, patient_id: str, series_id: str) -> Series:
    series = await ImagingRecords(conn).series(series_id)
    if series is None:
        raise NotFound("the series is not known")
    study = await ImagingRecords(conn).study(series.study_id)
    if study is None or study.patient_id != patient_id:
        raise NotFound("the series is not known")
    return series


def _image(rendered_image: bytes, center: float, width: float) -> Response:
    return Response(
        rendered_image,
        media_type="image/png",
        headers={
            "Cache-Control": "no-store",
            "X-Window-Center": f"{center:g}",
            "X-Window-Width": f"{width:g}",
        },
    )


def _placeholder() -> Response:
    return Response(
        "This image cannot be shown here: its compression is not supported by this server.",
        status_code=415,
        media_type="text/plain",
    )


@router.get("/patients/{patient_id}/imaging/series/{series_id}/frames/{instance_id}")
async def frame(
    request: Request,
    database: DatabaseDep,
    patient_id: str,
    series_id: str,
    instance_id: str,
    clinician: SessionUser = Depends(signed_in_quietly),
) -> Response:
    """One frame as PNG (`frame`: 0-based index, `window`: centre,width)."""
    await _open(request, clinician, patient_id, series_id)
    raw_index = request.query_params.get("frame", "0")
    index = int(raw_index) if raw_index.isascii() and raw_index.isdigit() else 0
    try:
        window = parse_window(request.query_params.get("window"))
    except ValueError:
        window = None  # a page asks well-formed windows; anything else shows the default
    async with database.read() as conn:
        await _series_of_patient(conn, patient_id, series_id)
        records = ImagingRecords(conn)
        instance = await records.instance(instance_id)
        if instance is None or instance.series_id != series_id:
            raise NotFound("the image is not known")
        content = await records.content(instance)
    try:
        rendered = render_frame(content, index, window)
    except Undecodable:
        return _placeholder()
    except IndexError:
        raise NotFound("the frame is not in the image") from None
    return _image(rendered.image, rendered.window.center, rendered.window.width)


@router.get("/patients/{patient_id}/imaging/series/{series_id}/thumbnail")
async def thumbnail(
    request: Request,
    database: DatabaseDep,
    patient_id: str,
    series_id: str,
    clinician: SessionUser = Depends(signed_in_quietly),
) -> Response:
    """The series' middle slice, small."""
    await _open(request, clinician, patient_id, series_id)
    async with database.read() as conn:
        await _series_of_patient(conn, patient_id, series_id)
        records = ImagingRecords(conn)
        frames = slices(await records.instances(series_id))
        if not frames:
            raise NotFound("the series has no image")
        middle = frames[len(frames) // 2]
        instance = await records.instance(middle.instance_id)
        assert instance is not None
        content = await records.content(instance)
    try:
        rendered = render_frame(content, middle.frame, max_side=THUMBNAIL_SIDE)
    except Undecodable:
        return _placeholder()
    return _image(rendered.image, rendered.window.center, rendered.window.width)
