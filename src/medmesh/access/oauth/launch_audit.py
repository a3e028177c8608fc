"""Audit records of SMART App Launch: what an app asked for and was given, by whom, for which
patient. `basis` names the app (`app:<client_id>`); ids only, never tokens or codes."""

from __future__ import annotations

from medmesh.access.audit.entries import AuditEntry


def app_entry(
    *,
    subtype: str,
    permitted: bool,
    client_id: str,
    actor_kind: str,
    actor_id: str,
    actor_name: str,
    organization_id: str | None,
    patient_id: str | None,
    source: str | None,
) -> AuditEntry:
    return AuditEntry(
        action="E",
        subtype=subtype,
        outcome="0" if permitted else "4",
        actor_kind=actor_kind,
        actor_id=actor_id[:100],
        actor_name=actor_name[:200],
        organization_id=organization_id,
        resource_type="Patient" if patient_id else None,
        patient_id=patient_id,
        purpose="TREAT",
        basis=f"app:{client_id}"[:100],
        source=source,
    )
