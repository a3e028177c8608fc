"""What a period of remote monitoring makes billable: pure rules over days with device data,
set-up and education, and treatment-management minutes. The codes and thresholds come from a
JSON file (by default the US CMS CY 2026 Physician Fee Schedule, docs/rpm-report.md), since
they change by year and country."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from medmesh.domain.errors import InvalidRequest

DEFAULT_CODES = "rpm_codes_us_cms_2026.json"


@dataclass(frozen=True, slots=True)
class DeviceCode:
    code: str
    min_days: int
    max_days: int


@dataclass(frozen=True, slots=True)
class TimeCode:
    code: str
    min_minutes: int


@dataclass(frozen=True, slots=True)
class RpmCodes:
    name: str
    setup_code: str
    setup_min_days: int
    device: tuple[DeviceCode, ...]  # mutually exclusive, by days of data
    first: tuple[TimeCode, ...]  # mutually exclusive, by minutes
    addon_code: str
    addon_step_minutes: int  # each further full step past the longest first code


@dataclass(frozen=True, slots=True)
class Billing:
    codes: tuple[tuple[str, int], ...]  # (code, units)
    days_to_next: int | None  # more days of data for the next device code (None: at the top)
    next_device_code: str | None
    minutes_to_next: int | None  # more minutes for the next management code
    next_time_code: str | None
    needs_interactive: bool  # minutes are there but no real-time interactive communication


def load_codes(path: Path | None = None) -> RpmCodes:
    """The codes from `path`, or the built-in CMS CY 2026 set; a malformed file is refused
    with what is wrong."""
    try:
        if path is None:
            text = resources.files("medmesh.care.data").joinpath(DEFAULT_CODES).read_text()
        else:
            text = path.read_text(encoding="utf-8")
        raw: dict[str, Any] = json.loads(text)
        device = tuple(
            DeviceCode(d["code"], int(d["min_days"]), int(d["max_days"])) for d in raw["device"]
        )
        first = tuple(
            TimeCode(t["code"], int(t["min_minutes"])) for t in raw["management"]["first"]
        )
        codes = RpmCodes(
            name=str(raw["name"]),
            setup_code=str(raw["setup"]["code"]),
            setup_min_days=int(raw["setup"]["min_days"]),
            device=tuple(sorted(device, key=lambda d: d.min_days)),
            first=tuple(sorted(first, key=lambda t: t.min_minutes)),
            addon_code=str(raw["management"]["addon"]["code"]),
            addon_step_minutes=int(raw["management"]["addon"]["step_minutes"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InvalidRequest(f"the RPM codes file is not valid: {error}") from None
    if not codes.device or not codes.first or codes.addon_step_minutes <= 0:
        raise InvalidRequest("the RPM codes file needs device codes, time codes and a step")
    return codes


def bill(
    codes: RpmCodes, *, days: int, setup_done: bool, minutes: int, interactive: bool
) -> Billing:
    """The codes a period earns: set-up once data exists; one device code by days; one first
    management code by minutes (never two), with add-on units for each further full step past
    the longest first code, only with at least one real-time interactive communication."""
    earned: list[tuple[str, int]] = []
    if setup_done and days >= codes.setup_min_days:
        earned.append((codes.setup_code, 1))
    device = [d for d in codes.device if d.min_days <= days]
    if device:
        earned.append((device[-1].code, 1))
    above = [d for d in codes.device if d.min_days > days]
    first = [t for t in codes.first if t.min_minutes <= minutes]
    if first and interactive:
        earned.append((first[-1].code, 1))
        longest = codes.first[-1]
        if first[-1] is longest:
            units = (minutes - longest.min_minutes) // codes.addon_step_minutes
            if units > 0:
                earned.append((codes.addon_code, units))
    if minutes >= codes.first[-1].min_minutes:
        top = codes.first[-1].min_minutes
        step = codes.addon_step_minutes
        target = top + ((minutes - top) // step + 1) * step
        next_time: tuple[int | None, str | None] = (target - minutes, codes.addon_code)
    else:
        upcoming = next(t for t in codes.first if t.min_minutes > minutes)
        next_time = (upcoming.min_minutes - minutes, upcoming.code)
    return Billing(
        codes=tuple(earned),
        days_to_next=above[0].min_days - days if above else None,
        next_device_code=above[0].code if above else None,
        minutes_to_next=next_time[0],
        next_time_code=next_time[1],
        needs_interactive=bool(first) and not interactive,
    )
