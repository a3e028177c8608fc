"""Alerts: what a rule raised about a patient, and its lifecycle open → acknowledged → resolved.

Titles and details may quote values (clinicians see them; they are stored like other health
data) but must never be logged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from medmesh.domain.errors import Conflict

SYSTEM_ACTOR = "medmesh"  # who resolves an alert whose condition cleared by itself
CONDITION_CLEARED = "condition cleared"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    URGENT = "urgent"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for info up to 3 for critical: sort by it, compare with it."""
        return _RANKS[self]


_RANKS = {Severity.INFO: 0, Severity.WARNING: 1, Severity.URGENT: 2, Severity.CRITICAL: 3}


class AlertStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert. `opened_at`, acknowledgement, resolution and escalation times are when
    medmesh or a clinician acted; `last_triggered_at` is the time of the latest evidence (the
    reading's time, or the end of the period a schedule check looked at)."""

    id: str
    patient_id: str
    rule: str
    dedupe_key: str
    severity: Severity
    status: AlertStatus
    title: str
    detail: str
    device_id: str | None
    observation_id: str | None
    opened_at: datetime
    last_triggered_at: datetime
    trigger_count: int
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolution: str | None = None
    escalation_level: int = 0
    escalated_at: datetime | None = None

    @property
    def is_active(self) -> bool:
        return self.status is not AlertStatus.RESOLVED

    def acknowledge(self, who: str, at: datetime) -> Alert:
        """The alert acknowledged by `who`; only an open alert can be."""
        if self.status is not AlertStatus.OPEN:
            raise Conflict(
                f"the alert is {self.status.value}; only an open alert can be acknowledged"
            )
        return dataclasses.replace(
            self, status=AlertStatus.ACKNOWLEDGED, acknowledged_at=at, acknowledged_by=who
        )

    def resolve(self, who: str, at: datetime, reason: str) -> Alert:
        """The alert resolved by `who` for `reason`; a resolved alert stays resolved."""
        if self.status is AlertStatus.RESOLVED:
            raise Conflict("the alert is already resolved")
        return dataclasses.replace(
            self, status=AlertStatus.RESOLVED, resolved_at=at, resolved_by=who, resolution=reason
        )


def _instant(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def alert_json(alert: Alert) -> dict[str, Any]:
    """The alert as the JSON API renders it and as ALERT events carry it."""
    return {
        "id": alert.id,
        "patient_id": alert.patient_id,
        "rule": alert.rule,
        "dedupe_key": alert.dedupe_key,
        "severity": alert.severity.value,
        "status": alert.status.value,
        "title": alert.title,
        "detail": alert.detail,
        "device_id": alert.device_id,
        "observation_id": alert.observation_id,
        "opened_at": _instant(alert.opened_at),
        "last_triggered_at": _instant(alert.last_triggered_at),
        "trigger_count": alert.trigger_count,
        "acknowledged_at": _instant(alert.acknowledged_at),
        "acknowledged_by": alert.acknowledged_by,
        "resolved_at": _instant(alert.resolved_at),
        "resolved_by": alert.resolved_by,
        "resolution": alert.resolution,
        "escalation_level": alert.escalation_level,
        "escalated_at": _instant(alert.escalated_at),
    }
