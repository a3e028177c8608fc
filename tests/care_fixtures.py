"""Shared by the care tests: a patient with their own account, their care team's clinician,
and photos and documents to attach."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import httpx
import pytest
from PIL import Image

from medmesh import provisioning
from medmesh.access.identity.principals import Role
from medmesh.app import create_app
from medmesh.config import Settings
from medmesh.store.database import Database
from tests.conftest import CLINICIAN_PASSWORD, World, make_world
from tests.helpers import AppClient

# Put in a photo's metadata: none of it may survive the re-encoding.
SECRET_CAMERA = "Pixel-7-SERIAL-2231"
SECRET_PLACE = "Jane Doe at 12 Acacia Avenue"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True, slots=True)
class CareCast:
    world: World
    patient: dict[str, str]  # the patient's own account, patient/*.cruds
    patient_user_id: str
    clinician: dict[str, str]  # their care team's clinician, user/*.cruds
    other: World  # another patient with their own care team
    other_patient: dict[str, str]


def photo(width: int = 64, height: int = 48, *, fmt: str = "JPEG") -> bytes:
    """A photo with EXIF metadata naming a camera and a place."""
    image = Image.new("RGB", (width, height), (200, 80, 60))
    exif = Image.Exif()
    exif[0x010F] = SECRET_CAMERA  # Make
    exif[0x010E] = SECRET_PLACE  # ImageDescription
    exif[0x0112] = 6  # Orientation: rotated 90° clockwise when shown
    out = io.BytesIO()
    image.save(out, format=fmt, exif=exif.tobytes())
    return out.getvalue()


PDF_BYTES = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


async def patient_account(database: Database, world: World, username: str) -> tuple[str, str]:
    user = await provisioning.create_user(
        database,
        username=username,
        display_name=username.replace("-", " ").title(),
        role=Role.PATIENT,
        password=CLINICIAN_PASSWORD,
        patient_id=world.patient_id,
    )
    token = await provisioning.issue_user_token(database, user_id=user.id, scopes="patient/*.cruds")
    return user.id, token


async def make_cast(database: Database) -> CareCast:
    world = await make_world(database, "MRN-1")
    other = await make_world(database, "MRN-2")
    user_id, token = await patient_account(database, world, "jane-doe")
    _, other_token = await patient_account(database, other, "rick-roe")
    return CareCast(
        world=world,
        patient=bearer(token),
        patient_user_id=user_id,
        clinician=world.reader_headers,
        other=other,
        other_patient=bearer(other_token),
    )


@pytest.fixture
async def care_http(database_url: str) -> AsyncIterator[AppClient]:
    settings = Settings(
        database_url=database_url,
        auto_migrate=False,
        alert_check_interval_seconds=0,
        message_attachment_max_bytes=200_000,
        message_max_attachments=2,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app), AppClient(app) as http:
        yield http


@pytest.fixture
async def care(database: Database) -> CareCast:
    return await make_cast(database)


async def start_thread(
    http: AppClient,
    patient_id: str,
    headers: dict[str, str],
    *,
    subject: str = "Wound on my left foot",
    body: str = "The wound looks red since yesterday.",
    category: str | None = None,
    files: Sequence[tuple[str, bytes, str]] = (),
) -> httpx.Response:
    data = {"patient": patient_id, "subject": subject, "body": body}
    if category is not None:
        data["category"] = category
    return await http.post(
        "/api/v1/threads",
        data=data,
        files=[("attachment", f) for f in files],
        headers=headers,
    )
