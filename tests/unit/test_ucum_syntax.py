"""The UCUM check laboratory units pass before they are stored (HL7 ORU, docs/hl7.md)."""

from __future__ import annotations

import pytest

from medmesh.domain.ucum_syntax import is_ucum


@pytest.mark.parametrize(
    "unit", ["10*3/uL", "10*6/uL", "g/dL", "mmol/L", "%", "fL", "U/L", "mL/min/{1.73_m2}", "1"]
)
def test_units_laboratories_send_are_ucum(unit: str) -> None:
    assert is_ucum(unit)


@pytest.mark.parametrize("unit", ["", "mEq/L", "mmol//L", "g / dL", "per cent", "µg/L", "x\x00"])
def test_units_that_are_not_ucum_are_refused(unit: str) -> None:
    assert not is_ucum(unit)
