"""Whether a unit is written in valid UCUM syntax (https://ucum.org/ucum), checked with
ucumvert's grammar of the UCUM specification: a laboratory's units are stored as sent, so they
must at least be UCUM."""

from __future__ import annotations

import functools
from typing import Any

from lark.exceptions import LarkError
from ucumvert import get_ucum_parser  # type: ignore[import-untyped]


@functools.cache
def _parser() -> Any:
    return get_ucum_parser()  # builds the grammar once (a few hundred milliseconds)


def is_ucum(unit: str) -> bool:
    """True when `unit` parses as a UCUM term (`mmol/L`, `10*3/uL`, `mL/min/{1.73_m2}`, `%`);
    case matters, as in UCUM (`mEq/L` is not UCUM, `meq/L` is)."""
    if not unit or not unit.isascii() or not unit.isprintable() or " " in unit:
        return False
    try:
        _parser().parse(unit)
    except LarkError:
        return False
    return True
