"""Audit records and the rule that chains them: what was done to whose data, by whom, and the
hash that links each record to the one before it.

Pure values and arithmetic, no I/O: the store appends records, `access.audit` verifies them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

GENESIS_HASH = "0" * 64


class Action(StrEnum):
    """FHIR AuditEvent.action."""

    CREATE = "C"
    READ = "R"  # read, view, search, print
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"  # an operation: export, erase, break-glass


class Outcome(StrEnum):
    """FHIR AuditEvent.outcome (12, major failure, is not used: nothing is left half-done)."""

    SUCCESS = "0"
    REFUSED = "4"  # minor failure: the request was denied or invalid
    FAILED = "8"  # serious failure: the platform could not do what was allowed


# Column limits of audit_log: a longer value is a programming error, refused before it is
# hashed (PostgreSQL would refuse it on insert; SQLite would silently keep it).
_LIMITS = {
    "subtype": 32,
    "actor_kind": 16,
    "actor_id": 100,
    "actor_name": 200,
    "organization_id": 36,
    "resource_type": 64,
    "resource_id": 100,
    "patient_id": 36,
    "purpose": 16,
    "basis": 100,
    "source": 100,
}


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One access to health data, as the caller reports it.

    `subtype` names the interaction (read, search, create, update, delete, export, erase,
    break-glass); `basis` why it was allowed (self, care-team, consent:<id>, break-glass:<id>);
    `purpose` a v3 PurposeOfUse code (TREAT, ETREAT, PATRQT, HRESCH…); `source` the caller's
    network address. Ids only: never names of patients, values or query strings.
    """

    action: Action | str
    subtype: str
    actor_kind: str
    actor_id: str
    actor_name: str
    outcome: Outcome | str = Outcome.SUCCESS
    organization_id: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    patient_id: str | None = None
    purpose: str | None = None
    basis: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        if self.action not in _ACTIONS:
            raise ValueError("audit action must be one of C, R, U, D, E")
        if self.outcome not in _OUTCOMES:
            raise ValueError("audit outcome must be 0, 4 or 8")
        for name, limit in _LIMITS.items():
            value = getattr(self, name)
            if value is not None and len(value) > limit:
                raise ValueError(f"audit {name} is longer than {limit} characters")
        if not (self.subtype and self.actor_kind and self.actor_id):
            raise ValueError("audit subtype, actor_kind and actor_id must not be empty")


_ACTIONS = frozenset(a.value for a in Action)
_OUTCOMES = frozenset(o.value for o in Outcome)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An entry as stored: numbered, timed, and chained to the record before it."""

    seq: int
    id: str
    recorded: datetime
    action: str
    subtype: str
    outcome: str
    actor_kind: str
    actor_id: str
    actor_name: str
    organization_id: str | None
    resource_type: str | None
    resource_id: str | None
    patient_id: str | None
    purpose: str | None
    basis: str | None
    source: str | None
    prev_hash: str
    hash: str


def rfc3339(moment: datetime) -> str:
    """`moment` in UTC, always with microseconds: 2026-11-25T22:05:49.000000Z."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime given where an aware UTC time is required")
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def canonical(fields: dict[str, Any]) -> bytes:
    """The canonical form of a record's fields (all but `hash`): JSON with sorted keys, no
    whitespace, UTF-8 without escaping non-ASCII, times as `rfc3339`.

    Byte for byte what Python's `json.dumps(fields, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)` gives, so anyone can re-verify the chain without medmesh; orjson
    only because verification reads millions of records.
    """
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def chain_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    """SHA-256 (hex) of `prev_hash` followed by the canonical form of `fields`."""
    digest = hashlib.sha256(prev_hash.encode("ascii"))
    digest.update(canonical(fields))
    return digest.hexdigest()


def hashed_fields(
    seq: int, record_id: str, recorded: datetime, entry: AuditEntry, prev_hash: str
) -> dict[str, Any]:
    """Every field of the record that the chain hash covers (all but `hash` itself)."""
    return {
        "seq": seq,
        "id": record_id,
        "recorded": rfc3339(recorded),
        "action": str(entry.action),
        "subtype": entry.subtype,
        "outcome": str(entry.outcome),
        "actor_kind": entry.actor_kind,
        "actor_id": entry.actor_id,
        "actor_name": entry.actor_name,
        "organization_id": entry.organization_id,
        "resource_type": entry.resource_type,
        "resource_id": entry.resource_id,
        "patient_id": entry.patient_id,
        "purpose": entry.purpose,
        "basis": entry.basis,
        "source": entry.source,
        "prev_hash": prev_hash,
    }


def record_fields(record: AuditRecord) -> dict[str, Any]:
    """The hashed fields of a stored record, to recompute its hash."""
    return {
        "seq": record.seq,
        "id": record.id,
        "recorded": rfc3339(record.recorded),
        "action": record.action,
        "subtype": record.subtype,
        "outcome": record.outcome,
        "actor_kind": record.actor_kind,
        "actor_id": record.actor_id,
        "actor_name": record.actor_name,
        "organization_id": record.organization_id,
        "resource_type": record.resource_type,
        "resource_id": record.resource_id,
        "patient_id": record.patient_id,
        "purpose": record.purpose,
        "basis": record.basis,
        "source": record.source,
        "prev_hash": record.prev_hash,
    }


def seal(
    seq: int, record_id: str, recorded: datetime, entry: AuditEntry, prev_hash: str
) -> AuditRecord:
    """The record that appends `entry` after a record whose hash is `prev_hash`."""
    recorded = recorded.astimezone(UTC)
    fields = hashed_fields(seq, record_id, recorded, entry, prev_hash)
    return AuditRecord(
        seq=seq,
        id=record_id,
        recorded=recorded,
        action=fields["action"],
        subtype=entry.subtype,
        outcome=fields["outcome"],
        actor_kind=entry.actor_kind,
        actor_id=entry.actor_id,
        actor_name=entry.actor_name,
        organization_id=entry.organization_id,
        resource_type=entry.resource_type,
        resource_id=entry.resource_id,
        patient_id=entry.patient_id,
        purpose=entry.purpose,
        basis=entry.basis,
        source=entry.source,
        prev_hash=prev_hash,
        hash=chain_hash(prev_hash, fields),
    )
