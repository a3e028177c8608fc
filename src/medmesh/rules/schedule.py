"""Rules on the clock rather than on readings: a device that stopped reporting (stale) and
readings the care plan expects but the patient did not take (adherence)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.alerts import Severity
from medmesh.domain.care_plans import CarePlan, Schedule, Thresholds
from medmesh.domain.vocabulary import measure_by_code, measure_by_key
from medmesh.rules.defaults import thresholds_for
from medmesh.rules.outcomes import Cleared, Finding, Outcome, dedupe_key, duration
from medmesh.store.care_plans import CarePlans
from medmesh.store.monitoring import Monitoring

STALE_RULE = "device-stale"
ADHERENCE_RULE = "missed-readings"
# How far back a device's readings tell which measures it sends (and so its cadence).
_MEASURES_SEEN_WITHIN = timedelta(days=2)


def _clock_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def stale_after(codes: Iterable[str], schedule: Schedule, t: Thresholds) -> timedelta:
    """Twice the shortest scheduled interval of the measures the device sends; the
    `stale_after_minutes` default when none of them is scheduled."""
    intervals = [
        interval
        for code in codes
        if (measure := measure_by_code(code)) is not None
        and (interval := schedule.interval(measure.key)) is not None
    ]
    return 2 * min(intervals) if intervals else t.minutes("stale_after_minutes")


async def device_outcomes(conn: AsyncConnection, now: datetime) -> dict[str, list[Outcome]]:
    """Per patient: each assigned device is stale (Finding) or reporting (Cleared). A device
    never heard from is not judged: it has not started."""
    monitoring = Monitoring(conn)
    devices = [d for d in await monitoring.assigned_devices(now) if d.last_seen is not None]
    plans = await CarePlans(conn).for_patients(sorted({d.patient_id for d in devices}))
    found: dict[str, list[Outcome]] = {}
    for device in devices:
        assert device.last_seen is not None
        plan = plans.get(device.patient_id, CarePlan(device.patient_id))
        codes = await monitoring.codes_sent(
            device.patient_id, device.device_id, device.last_seen - _MEASURES_SEEN_WITHIN
        )
        limit = stale_after(codes, plan.schedule, thresholds_for(plan))
        key = dedupe_key(STALE_RULE, device.patient_id, device.device_id)
        outcome: Outcome = Cleared(key)
        if now - device.last_seen > limit:
            outcome = Finding(
                STALE_RULE,
                key,
                Severity.WARNING,
                "Device not reporting",
                f"Nothing heard from the device since {_clock_time(device.last_seen)}; "
                f"expected within {duration(limit.total_seconds() / 60)}",
                device.last_seen,  # evidence does not move while it stays silent
                device.device_id,
            )
        found.setdefault(device.patient_id, []).append(outcome)
    return found


def last_complete_day(now: datetime, timezone: str) -> tuple[date, datetime, datetime]:
    """Yesterday in the patient's time zone, as a date and its UTC [start, end)."""
    zone = ZoneInfo(timezone)
    day = now.astimezone(zone).date() - timedelta(days=1)
    start = datetime.combine(day, time(0), zone)
    end = datetime.combine(day + timedelta(days=1), time(0), zone)
    return day, start.astimezone(UTC), end.astimezone(UTC)


async def adherence_outcomes(conn: AsyncConnection, now: datetime) -> dict[str, list[Outcome]]:
    """Per patient with a schedule: for each scheduled measure, whether yesterday had the
    expected number of readings. A day the plan did not cover whole (it changed during the
    day) is not judged."""
    monitoring = Monitoring(conn)
    found: dict[str, list[Outcome]] = {}
    for plan in await CarePlans(conn).scheduled():
        day, start, end = last_complete_day(now, plan.schedule.timezone)
        if plan.updated_at is not None and plan.updated_at > start:
            continue
        for key, expected in plan.schedule.per_day.items():
            measure = measure_by_key(key)
            if measure is None:
                continue  # the API refuses unknown measures; an old plan may still name one
            taken = await monitoring.count_readings(plan.patient_id, [measure.code], start, end)
            alert_key = dedupe_key(ADHERENCE_RULE, plan.patient_id, key)
            outcome: Outcome = Cleared(alert_key)
            if taken < expected:
                outcome = Finding(
                    ADHERENCE_RULE,
                    alert_key,
                    Severity.WARNING,
                    "Missed readings",
                    f"{taken} of {expected} {measure.display.lower()} readings "
                    f"on {day.isoformat()}",
                    end,
                )
            found.setdefault(plan.patient_id, []).append(outcome)
    return found


def worth_storing(outcomes: Iterable[Outcome], active: dict[str, datetime]) -> list[Outcome]:
    """The outcomes that would change something, given the active alerts' last evidence by
    dedupe key: most periodic checks change nothing and need no write transaction."""
    return [o for o in outcomes if _changes(o, active)]


def _changes(outcome: Outcome, active: dict[str, datetime]) -> bool:
    if isinstance(outcome, Cleared):
        return outcome.dedupe_key in active
    last = active.get(outcome.dedupe_key)
    return last is None or outcome.at > last


RULES: Collection[str] = (STALE_RULE, ADHERENCE_RULE)
