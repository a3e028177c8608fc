"""Strict RFC 3339 date-times, the one format every JSON adapter accepts for a reading's time.

`datetime.fromisoformat` alone is too lenient (it takes ISO 8601 basic and week forms, and
dates without a time), so the text is matched first.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# Seconds optional; the offset is checked apart from the rest for a clearer error. ASCII
# digits only (\d alone takes ٢٠٢١ too, which would then fail as a "calendar" problem).
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(?P<offset>[Zz]|[+-]\d{2}:\d{2})?",
    re.ASCII,
)


class TimestampError(ValueError):
    """`problem` is "format" (not RFC 3339), "offset" (none given) or "calendar" (no such
    date or time)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def parse_rfc3339(text: str, *, assume_utc: bool = False) -> datetime:
    """Parse an RFC 3339 date-time. Without an offset it is refused, or read as UTC when
    `assume_utc` (formats whose specification says so, such as IEEE 1752.1)."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise TimestampError("format")
    if match.group("offset") is None and not assume_utc:
        raise TimestampError("offset")
    try:
        fraction = match.group(2)
        if fraction is not None and len(fraction) > 7:
            # Python before 3.12 takes at most 6 fractional digits.
            text = text[: match.start(2) + 7] + text[match.end(2) :]
        moment = datetime.fromisoformat(text.upper())
    except ValueError:
        raise TimestampError("calendar") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
