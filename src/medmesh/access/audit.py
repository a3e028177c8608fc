"""Interim stand-in: the audit work replaces this module."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AuditEntry:
    action: str
    subtype: str
    outcome: str
    actor_kind: str
    actor_id: str
    actor_name: str
    organization_id: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    patient_id: str | None = None
    purpose: str | None = None
    basis: str | None = None
    source: str | None = None
