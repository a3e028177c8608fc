"""What an adapter hands the pipeline: one item per reading, parsed or refused at parse time."""

from __future__ import annotations

from dataclasses import dataclass

from medmesh.domain.errors import InvalidReading
from medmesh.domain.reading import RawReading


@dataclass(frozen=True, slots=True)
class Incoming:
    """One reading as received: `payload` is its original text, kept for the dead letter."""

    payload: str
    message_id: str | None
    reading: RawReading | None = None
    error: InvalidReading | None = None
