"""The fault runs' bookkeeping: a ledger of every reading sent, acknowledged or refused, and
the row each fault adds to the fault table."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

HTTP, MQTT, MLLP = "http", "mqtt", "mllp"
CHANNELS = (HTTP, MQTT, MLLP)


@dataclass
class Ledger:
    """Every reading sent, every acknowledgement received and the last refusal of each
    reading not (yet) acknowledged, keyed by (channel, message id)."""

    sent: set[tuple[str, str]] = field(default_factory=set)
    acknowledged: set[tuple[str, str]] = field(default_factory=set)
    refusals: dict[tuple[str, str], str] = field(default_factory=dict)
    refused_attempts: int = 0
    ack_times: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in CHANNELS})
    lost: list[tuple[str, str]] = field(default_factory=list)  # filled in by run_fault

    def send(self, channel: str, ids: list[str]) -> None:
        self.sent.update((channel, i) for i in ids)

    def ack(self, channel: str, ids: list[str]) -> None:
        self.acknowledged.update((channel, i) for i in ids)
        for i in ids:
            self.refusals.pop((channel, i), None)
        self.ack_times[channel].append(time.monotonic())

    def refuse(self, channel: str, ids: list[str], reason: str) -> None:
        self.refused_attempts += 1
        for i in ids:
            if (channel, i) not in self.acknowledged:
                self.refusals[(channel, i)] = reason

    def first_ack_after(self, moment: float) -> dict[str, float | None]:
        return {
            c: next((t for t in times if t >= moment), None) for c, times in self.ack_times.items()
        }


@dataclass(frozen=True, slots=True)
class FaultRow:
    """One line of the fault table."""

    fault: str
    backend: str
    sent: int
    acknowledged: int
    stored: int
    lost: int  # acknowledged, not stored
    duplicated: int  # rows beyond one per (device, message id)
    unexplained: int  # neither acknowledged nor stored nor refused with a reason
    refused_attempts: int  # attempts answered with an error or no answer (then resent)
    recovery_seconds: float | None  # from the repair until every channel acknowledges again
    alert_seen: bool  # the alert raised during the fault is on the clinician's alert list
    alert_streamed: bool  # …and came on the event stream (which reconnects like EventSource)

    def cells(self) -> list[str]:
        recovery = "-" if self.recovery_seconds is None else f"{self.recovery_seconds:.2f} s"
        return [
            self.fault,
            self.backend,
            str(self.sent),
            str(self.acknowledged),
            str(self.stored),
            str(self.lost),
            str(self.duplicated),
            str(self.refused_attempts),
            recovery,
            "yes" if self.alert_seen else "NO",
            "yes" if self.alert_streamed else "NO",
        ]


HEADER = [
    "fault",
    "backend",
    "sent",
    "acknowledged",
    "stored",
    "lost",
    "duplicated",
    "refused attempts",
    "recovery",
    "alert listed",
    "alert streamed",
]


def fault_table(rows: list[FaultRow]) -> str:
    """The rows as a Markdown table (figures with their units, as docs/benchmarks.md shows)."""
    lines = [HEADER, ["---"] * len(HEADER), *(r.cells() for r in rows)]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)
