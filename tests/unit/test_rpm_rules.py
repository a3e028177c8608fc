"""The billing rules of remote physiologic monitoring (CMS CY 2026 codes, built in): device
days 1 vs 2 vs 15 vs 16, management minutes 9 vs 10 vs 19 vs 20 vs 40 vs 41, minutes without
a real-time interactive communication, and a code file of another year."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medmesh.care.rpm_rules import bill, load_codes
from medmesh.domain.errors import InvalidRequest

CODES = load_codes()


def _codes(
    days: int = 0, minutes: int = 0, *, setup: bool = False, talk: bool = True
) -> dict[str, int]:
    return dict(bill(CODES, days=days, setup_done=setup, minutes=minutes, interactive=talk).codes)


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        (0, {}),
        (1, {}),
        (2, {"99445": 1}),
        (15, {"99445": 1}),
        (16, {"99454": 1}),
        (30, {"99454": 1}),
    ],
)
def test_device_supply_is_99445_for_2_to_15_days_and_99454_from_16_never_both(
    days: int, expected: dict[str, int]
) -> None:
    assert _codes(days=days) == expected


def test_days_still_needed_name_the_next_device_code() -> None:
    one = bill(CODES, days=1, setup_done=False, minutes=0, interactive=False)
    assert (one.days_to_next, one.next_device_code) == (1, "99445")
    fifteen = bill(CODES, days=15, setup_done=False, minutes=0, interactive=False)
    assert (fifteen.days_to_next, fifteen.next_device_code) == (1, "99454")
    top = bill(CODES, days=16, setup_done=False, minutes=0, interactive=False)
    assert top.days_to_next is None


@pytest.mark.parametrize(
    ("minutes", "expected"),
    [
        (9, {}),
        (10, {"99470": 1}),
        (19, {"99470": 1}),
        (20, {"99457": 1}),
        (39, {"99457": 1}),
        (40, {"99457": 1, "99458": 1}),
        (41, {"99457": 1, "99458": 1}),
        (60, {"99457": 1, "99458": 2}),
    ],
)
def test_management_is_99470_or_99457_never_both_and_99458_per_further_20_minutes(
    minutes: int, expected: dict[str, int]
) -> None:
    assert _codes(minutes=minutes) == expected


def test_minutes_without_any_interactive_communication_bill_nothing_and_say_why() -> None:
    billing = bill(CODES, days=0, setup_done=False, minutes=45, interactive=False)
    assert billing.codes == ()
    assert billing.needs_interactive


def test_minutes_still_needed_name_the_next_management_code() -> None:
    assert bill(CODES, days=0, setup_done=False, minutes=4, interactive=True).minutes_to_next == 6
    nineteen = bill(CODES, days=0, setup_done=False, minutes=19, interactive=True)
    assert (nineteen.minutes_to_next, nineteen.next_time_code) == (1, "99457")
    forty_one = bill(CODES, days=0, setup_done=False, minutes=41, interactive=True)
    assert (forty_one.minutes_to_next, forty_one.next_time_code) == (19, "99458")


def test_setup_and_education_bill_99453_once_there_are_two_days_of_data() -> None:
    assert "99453" not in _codes(days=1, setup=True)
    assert _codes(days=2, setup=True) == {"99453": 1, "99445": 1}


def test_another_years_codes_come_from_the_configured_file(tmp_path: Path) -> None:
    path = tmp_path / "codes.json"
    path.write_text(
        json.dumps(
            {
                "name": "test year",
                "setup": {"code": "S1", "min_days": 1},
                "device": [{"code": "D16", "min_days": 16, "max_days": 30}],
                "management": {
                    "first": [{"code": "M20", "min_minutes": 20}],
                    "addon": {"code": "A20", "step_minutes": 20},
                },
            }
        )
    )
    codes = load_codes(path)
    billing = bill(codes, days=15, setup_done=True, minutes=10, interactive=True)
    assert dict(billing.codes) == {"S1": 1}


def test_a_malformed_codes_file_is_refused_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "codes.json"
    path.write_text('{"name": "x"}')
    with pytest.raises(InvalidRequest, match="RPM codes file is not valid"):
        load_codes(path)
