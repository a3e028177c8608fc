"""HTTP ingest: a device POSTs a batch of readings with its own bearer credential.

The answer (202) is sent only after the batch is committed; a device that gets no answer sends
the same batch again, and message ids make that safe.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from medmesh.access.http import (
    IngestingDevice,
    forget_device_credential,
    require_ingesting_device,
)
from medmesh.domain.errors import (
    Conflict,
    InvalidReading,
    Unauthenticated,
    UnsupportedMediaType,
)
from medmesh.http.deps import database_of, provided, provided_or_none
from medmesh.http.openapi import ERROR_RESPONSES
from medmesh.ingest.formats import NATIVE, Formats
from medmesh.ingest.known_signing_keys import KnownSigningKeys
from medmesh.ingest.native import ignored_fields
from medmesh.ingest.pipeline import IngestPipeline
from medmesh.ingest.signed_readings import HEADER, check_request, record_nonce
from medmesh.store.dead_letters import DeadLetter, DeadLetters
from medmesh.store.registry import Devices

router = APIRouter(prefix="/ingest/v1", tags=["ingest"], responses=ERROR_RESPONSES)

MAX_DEAD_LETTER_PAYLOAD = 65_536


# The native format, for the OpenAPI document only: the body is parsed by ingest/native.py,
# which answers every problem with a specific reason instead of a generic 422.
NATIVE_BATCH_SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["readings"],
    "properties": {
        "device": {"type": "string", "description": "Optional; must be the sending device"},
        "readings": {
            "type": "array",
            "maxItems": 1000,
            "items": {
                "type": "object",
                "required": ["id", "type", "time", "value", "unit"],
                "properties": {
                    "id": {"type": "string", "minLength": 1, "maxLength": 128},
                    "type": {"type": "string", "description": "medmesh key or LOINC code"},
                    "time": {"type": "string", "format": "date-time"},
                    "value": {
                        "oneOf": [
                            {"type": "number"},
                            {"type": "object", "additionalProperties": {"type": "number"}},
                        ]
                    },
                    "unit": {"type": "string", "description": "UCUM, or a known alias"},
                },
            },
        },
    },
}


class RejectedReading(BaseModel):
    index: int = Field(description="Position of the reading in the batch, from 0")
    id: str | None = Field(description="The reading's message id, when it had a usable one")
    reason: str = Field(description="Machine-readable reason, e.g. implausible-value")
    detail: str


class IngestReceipt(BaseModel):
    accepted: int = Field(description="Readings stored by this request")
    duplicates: int = Field(description="Readings already stored earlier (same message id)")
    rejected: list[RejectedReading]
    ignored_fields: list[str] | None = Field(
        None,
        description="Native format, present only when some were sent: fields medmesh does "
        "not read and ignored, by name (`patient`, `readings[].note`); at most 20",
    )


@router.post(
    "/readings/{format_name:path}",
    status_code=202,
    response_model=IngestReceipt,
    response_model_exclude_unset=True,
    summary="Send readings in another registered format (e.g. omh)",
)
async def post_readings_in_format(
    format_name: str, request: Request, device: IngestingDevice = Depends(require_ingesting_device)
) -> IngestReceipt:
    return await _ingest(request, device, format_name)


@router.post(
    "/readings",
    status_code=202,
    response_model=IngestReceipt,
    response_model_exclude_unset=True,
    summary="Send a batch of readings from an authenticated device",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": NATIVE_BATCH_SCHEMA}},
        }
    },
)
async def post_readings(
    request: Request, device: IngestingDevice = Depends(require_ingesting_device)
) -> IngestReceipt:
    return await _ingest(request, device, NATIVE)


def check_media_type(request: Request) -> None:
    """Every format is JSON: `application/json` or `application/<anything>+json`. A body
    without a Content-Type is read as JSON (some device stacks send none)."""
    header = request.headers.get("content-type")
    if header is None:
        return
    media_type = header.split(";", 1)[0].strip().lower()
    if media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return
    raise UnsupportedMediaType("the body must be JSON: Content-Type application/json")


pipeline_of = provided(IngestPipeline)
formats_of = provided(Formats)
known_signing_keys_of = provided_or_none(KnownSigningKeys)


async def _ingest(request: Request, device: IngestingDevice, format_name: str) -> IngestReceipt:
    pipeline = pipeline_of(request)
    formats = formats_of(request)
    check_media_type(request)
    # Its size is limited (max_body_bytes) before it gets here: http/request_limits.py.
    body = await request.body()
    device_id = device.principal.device_id
    database = database_of(request)
    known_keys = known_signing_keys_of(request)
    # Before anything is parsed or stored: a device that signs is checked here, and one that
    # must sign and did not is refused (docs/signed-payloads.md).
    signature = request.headers.get(HEADER)
    policy, now = pipeline.signatures, pipeline.now()
    seen, checked = await check_request(
        database, known_keys, device_id, signature, body, policy, now
    )
    if checked is not None:
        await record_nonce(database, checked, now)
    try:
        batch = formats.parse(format_name, body, device_id)
    except InvalidReading as exc:
        async with database.write() as conn:
            if device.secret_hash is not None and (
                (await Devices(conn).secret_hashes([device_id])).get(device_id)
                != device.secret_hash
            ):
                forget_device_credential(request, device)
                raise _revoked() from None
            await DeadLetters(conn).add_many(
                [
                    DeadLetter(
                        pipeline.now(),
                        "http",
                        device_id,
                        None,
                        exc.reason.value,
                        exc.message,
                        body[:MAX_DEAD_LETTER_PAYLOAD].decode("utf-8", "surrogateescape"),
                    )
                ]
            )
        raise
    result = await pipeline.ingest(
        device_id, "http", batch, credential=device.secret_hash, signing_key=seen
    )
    if result.signing_key_changed:
        # The key this process remembered was replaced or made required since: check the
        # signature again against the key now stored (its nonce is recorded already).
        if known_keys is not None:
            known_keys.forget(device_id)
        seen, _ = await check_request(database, known_keys, device_id, signature, body, policy, now)
        result = await pipeline.ingest(
            device_id, "http", batch, credential=device.secret_hash, signing_key=seen
        )
        if result.signing_key_changed:
            raise Conflict("the device's signing key changed while the readings were stored")
    if result.unauthenticated:
        forget_device_credential(request, device)
        raise _revoked()
    ignored = ignored_fields(body) if format_name == NATIVE else []
    receipt = IngestReceipt(
        accepted=len(result.stored),
        duplicates=len(result.duplicates),
        rejected=[
            RejectedReading(index=r.index, id=r.message_id, reason=r.reason.value, detail=r.detail)
            for r in result.rejected
        ],
    )
    if ignored:  # unset otherwise, so the receipt stays as it was for clean bodies
        receipt.ignored_fields = ignored
    return receipt


def _revoked() -> Unauthenticated:
    return Unauthenticated("the device credential is not valid")
