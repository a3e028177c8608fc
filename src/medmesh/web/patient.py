"""What the patient and device pages show beyond the records themselves: chart cards with a
text summary (the chart's content for people who cannot see it), the alert history in the
order a clinician works through it, and whether a device is reachable."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.alerts import Alert, AlertStatus
from medmesh.domain.registry import Device
from medmesh.store.alerts import Alerts
from medmesh.store.database import Database
from medmesh.store.device_status import DeviceStatus, DeviceStatuses
from medmesh.store.registry import Assignments, Devices
from medmesh.store.vitals import Bucket, LatestValue, Vitals
from medmesh.web.charts import RANGE_LABELS, RANGES, RAW_RANGE, load_series, uplot_data
from medmesh.web.vitals import ShownValue, VitalSpec, shown

ONLINE_WITHIN = timedelta(minutes=15)
HISTORY_LIMIT = 50
MAX_DEVICES = 20


@dataclass(frozen=True, slots=True)
class Connectivity:
    label: str
    css: str  # online, offline, unknown
    icon: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class ChartCard:
    vital: VitalSpec
    latest: ShownValue | None
    summary: str
    points: int
    config: dict[str, Any]  # what charts.js needs: labels, unit and the uPlot data


def connectivity(status: DeviceStatus | None, now: datetime) -> Connectivity:
    """Reported offline (its MQTT last will, say) wins; otherwise recent contact means online."""
    if status is None:
        return Connectivity("Never seen", "unknown", "?")
    if status.online is False:
        return Connectivity("Offline", "offline", "✕", "reported by the device or broker")
    if now - status.last_seen <= ONLINE_WITHIN:
        return Connectivity("Online", "online", "✓")
    minutes = int(ONLINE_WITHIN.total_seconds() // 60)
    return Connectivity("Not reporting", "offline", "✕", f"nothing for over {minutes} minutes")


async def current_devices(
    conn: AsyncConnection, patient_id: str, now: datetime
) -> list[tuple[Device, Connectivity]]:
    found = []
    for device in await Devices(conn).search(patient_id=patient_id, limit=MAX_DEVICES):
        history = await Assignments(conn).for_device(device.id)
        if any(a.patient_id == patient_id and a.covers(now) for a in history):
            status = await DeviceStatuses(conn).get(device.id)
            found.append((device, connectivity(status, now)))
    return found


def _summary(
    vital: VitalSpec, series: Sequence[tuple[str, Sequence[Bucket]]], range_key: str
) -> str:
    """The chart in words, as loaded (the latest value beside it is kept current)."""
    period = f"the last {RANGE_LABELS[range_key]}"
    parts = []
    for spec, (_, buckets) in zip(vital.series, series, strict=True):
        if buckets:
            low = min(b.low for b in buckets)
            high = max(b.high for b in buckets)
            readings = sum(b.count for b in buckets)
            label = spec.label if len(vital.series) > 1 else "Range"
            parts.append(
                f"{label} {low:.{vital.decimals}f} to {high:.{vital.decimals}f} {vital.unit} "
                f"({readings} reading{'s' if readings != 1 else ''})"
            )
    if not parts:
        return f"No readings in {period}."
    return f"In {period}: " + "; ".join(parts) + "."


def chart_card(
    vital: VitalSpec,
    series: Sequence[tuple[str, Sequence[Bucket]]],
    latest: dict[tuple[str, str], LatestValue],
    patient_id: str,
    range_key: str,
    now: datetime,
) -> ChartCard:
    newest = shown(vital, patient_id, latest, now)
    data = uplot_data(series)
    config = {
        "key": vital.key,
        "label": vital.label,
        "unit": vital.unit,
        "decimals": vital.decimals,
        "series": [{"key": s.key, "label": s.label} for s in vital.series],
        "data": data,
    }
    summary = _summary(vital, series, range_key)
    return ChartCard(vital, newest, summary, len(data["x"]), config)


def _work_order(alert: Alert) -> tuple[int, int, float]:
    """Open first, then acknowledged, then resolved; the most severe and newest first."""
    status = {AlertStatus.OPEN: 0, AlertStatus.ACKNOWLEDGED: 1, AlertStatus.RESOLVED: 2}
    return (status[alert.status], -alert.severity.rank, -alert.opened_at.timestamp())


async def alert_history(conn: AsyncConnection, patient_id: str) -> dict[str, Any]:
    repository = Alerts(conn)
    active = await repository.search(
        patient_id=patient_id, statuses=(AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED), limit=500
    )
    resolved = await repository.search(
        patient_id=patient_id, statuses=(AlertStatus.RESOLVED,), limit=HISTORY_LIMIT
    )
    return {
        "alerts": sorted([*active, *resolved], key=_work_order),
        "active": active,
        "unacknowledged": sum(a.status is AlertStatus.OPEN for a in active),
    }


async def chart_cards(
    database: Database,
    patient_id: str,
    vitals: Sequence[VitalSpec],
    latest: dict[tuple[str, str], LatestValue],
    range_key: str,
    now: datetime,
) -> tuple[list[ChartCard], dict[str, Any]]:
    """The chart cards of `vitals` over the range, and the configuration charts.js reads
    (the clinician's patient page and the patient's own readings page draw the same charts)."""
    start = now - RANGES[range_key]

    async def chart(vital: VitalSpec) -> ChartCard:
        # A connection each: a long range is a few heavy aggregations, run side by side.
        async with database.read() as own:
            series = await load_series(Vitals(own), patient_id, vital, start, now)
        return chart_card(vital, series, latest, patient_id, range_key, now)

    cards = list(await asyncio.gather(*(chart(vital) for vital in vitals)))
    config = {
        "patient": patient_id,
        "downsampled": RANGES[range_key] > RAW_RANGE,
        "range": range_key,
        "rangeSeconds": RANGES[range_key].total_seconds(),
        "now": now.timestamp(),
        "vitals": [card.config for card in cards],
    }
    return cards, config
