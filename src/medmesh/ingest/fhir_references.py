"""References in the Observations a gateway writes over FHIR (`Patient/{id}`, conditional
`Patient?identifier=system|value`, a logical reference by identifier, a Bundle entry's
`fullUrl`) resolved against the registry, and each Observation made a one-reading batch for the
pipeline. A reference that names no patient the device may write for becomes a patient the
pipeline refuses like any the device is not assigned to, so existence is not disclosed."""

from __future__ import annotations

from typing import Any

from medmesh.domain.errors import InvalidReading, RejectReason
from medmesh.ingest.fhir_observation import identifier_token, parse_observation
from medmesh.ingest.incoming import Incoming
from medmesh.ingest.pipeline import DeviceBatch
from medmesh.store.database import Database
from medmesh.store.registry import Devices, Patients

__all__ = ["CHANNEL", "device_by_identifier", "observation_batch"]

CHANNEL = "fhir"
_NOBODY = ""


def _local_id(reference: str, resource_type: str) -> str | None:
    """The id of `Type/id`, `Type/id/_history/n` or an absolute URL ending so."""
    parts = reference.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == resource_type and parts[-1]:
        return parts[-1]
    return None


async def patient_id_of(
    database: Database, reference: dict[str, Any] | None, local: dict[str, str]
) -> str | None:
    """The patient a reference names (None: it names none)."""
    if not isinstance(reference, dict):
        return None
    text = reference.get("reference")
    if isinstance(text, str):
        if text in local:
            return local[text]
        if text.startswith("Patient?"):
            system, sep, value = identifier_token(text[len("Patient?") :]).rpartition("|")
            async with database.read() as conn:
                found = await Patients(conn).find_by_identifier(system if sep else None, value)
            return found.id if found is not None else _NOBODY
        return _local_id(text, "Patient") or _NOBODY
    identifier = reference.get("identifier")
    if isinstance(identifier, dict) and identifier.get("value"):
        async with database.read() as conn:
            found = await Patients(conn).find_by_identifier(
                identifier.get("system"), str(identifier["value"])
            )
        return found.id if found is not None else _NOBODY
    return None


async def device_by_identifier(database: Database, value: str) -> str | None:
    """A registered device by the identifier a gateway knows it by: its serial number (PHD
    gateways send the IEEE EUI-64 system id) or its medmesh id."""
    async with database.read() as conn:
        devices = Devices(conn)
        found = await devices.find_by_serial_number(value)
        if found is None and await devices.existing_ids([value]):
            return value
    return found.id if found is not None else None


async def device_id_of(
    database: Database, reference: dict[str, Any] | None, local: dict[str, str]
) -> str | None:
    if not isinstance(reference, dict):
        return None
    text = reference.get("reference")
    if isinstance(text, str):
        if text in local:
            return local[text]
        if text.startswith("Device?"):
            value = identifier_token(text[len("Device?") :]).rpartition("|")[2]
            return await device_by_identifier(database, value) or _NOBODY
        return _local_id(text, "Device") or _NOBODY
    identifier = reference.get("identifier")
    if isinstance(identifier, dict) and identifier.get("value"):
        return await device_by_identifier(database, str(identifier["value"])) or _NOBODY
    return None


async def observation_batch(
    database: Database,
    device_id: str,
    resource: Any,
    if_none_exist: str | None,
    local: dict[str, str],
) -> DeviceBatch:
    observation = parse_observation(resource, if_none_exist)
    item = observation.incoming
    named_device = await device_id_of(database, observation.device, local)
    if named_device is not None and named_device != device_id and item.error is None:
        error = InvalidReading(
            RejectReason.DEVICE_MISMATCH,
            "Observation.device must be the sending device (by id or registered identifier)",
        )
        item = Incoming(item.payload, item.message_id, error=error)
    claimed = await patient_id_of(database, observation.subject, local)
    return DeviceBatch(device_id, CHANNEL, [item], claimed_patient_id=claimed)
