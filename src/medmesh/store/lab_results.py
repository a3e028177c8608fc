"""What a laboratory reports beside a result's value: the test's name (HL7 OBX-3 text), the
reference range (OBX-7), the interpretation flag (OBX-8), the result status (OBX-11) and a
comparator (OBX-5 SN), sealed with the patient's key and bound to the observation."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.store.database import cipher_of
from medmesh.store.schema import lab_result_details, observations

DETAIL = "lab_result_details.detail"
_RANGE = re.compile(r"\s*(?P<low>\d+(\.\d+)?)?\s*-\s*(?P<high>\d+(\.\d+)?)\s*")
_BOUND = re.compile(r"\s*(?P<op>[<>]=?)\s*(?P<value>\d+(\.\d+)?)\s*")


@dataclass(frozen=True, slots=True)
class LabFindings:
    """A result's reference range as the laboratory wrote it, parsed where it is `low-high`,
    `<high` or `>low`, its interpretation code (HL7 table 0078: N, H, L, HH, LL, A…), the test's
    name as the laboratory gave it, the FHIR status (`final`, `preliminary`, `corrected`) and
    the comparator of a value reported as `<5` (FHIR Quantity.comparator)."""

    reference_range: str | None = None
    interpretation: str | None = None
    display: str | None = None
    status: str = "final"
    comparator: str | None = None

    @property
    def low(self) -> float | None:
        return _bounds(self.reference_range)[0]

    @property
    def high(self) -> float | None:
        return _bounds(self.reference_range)[1]


def _bounds(text: str | None) -> tuple[float | None, float | None]:
    if not text:
        return None, None
    match = _RANGE.fullmatch(text)
    if match is not None:
        low, high = match["low"], match["high"]
        return (float(low) if low else None), float(high)
    bound = _BOUND.fullmatch(text)
    if bound is not None:
        value = float(bound["value"])
        return (None, value) if bound["op"].startswith("<") else (value, None)
    return None, None


class LabResults:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add_for_stored(self, findings: Mapping[str, LabFindings]) -> None:
        """Keep the findings of the observations (by id) that are stored and have none yet: a
        refused reading has no row to hang them on, a resent one keeps its first findings."""
        if not findings:
            return
        ids = list(findings)
        rows = (
            await self._conn.execute(
                select(observations.c.id, observations.c.patient_id).where(
                    observations.c.id.in_(ids)
                )
            )
        ).all()
        kept = set(
            (
                await self._conn.execute(
                    select(lab_result_details.c.observation_id).where(
                        lab_result_details.c.observation_id.in_(ids)
                    )
                )
            ).scalars()
        )
        fresh = [(oid, pid) for oid, pid in rows if oid not in kept]
        if not fresh:
            return
        keys = await cipher_of(self._conn).keys_for({pid for _, pid in fresh})
        await self._conn.execute(
            lab_result_details.insert(),
            [
                {
                    "observation_id": oid,
                    "detail": keys[pid].seal_text(_encode(findings[oid]), DETAIL, oid),
                }
                for oid, pid in fresh
            ],
        )

    async def for_observations(self, owners: Mapping[str, str]) -> dict[str, LabFindings]:
        """The findings of these observations (id → patient id), where there are any."""
        if not owners:
            return {}
        rows = (
            await self._conn.execute(
                select(lab_result_details).where(
                    lab_result_details.c.observation_id.in_(list(owners))
                )
            )
        ).mappings()
        found = list(rows)
        keys = await cipher_of(self._conn).keys_for({owners[r["observation_id"]] for r in found})
        result = {}
        for row in found:
            oid = row["observation_id"]
            key = keys.get(owners[oid])
            if key is not None:
                result[oid] = _decode(key.open_text(row["detail"], DETAIL, oid))
        return result


def _encode(findings: LabFindings) -> str:
    return orjson.dumps(
        {
            "range": findings.reference_range,
            "interpretation": findings.interpretation,
            "display": findings.display,
            "status": findings.status,
            "comparator": findings.comparator,
        }
    ).decode()


def _decode(text: str) -> LabFindings:
    parts = orjson.loads(text)
    return LabFindings(
        parts.get("range"),
        parts.get("interpretation"),
        parts.get("display"),
        parts.get("status") or "final",
        parts.get("comparator"),
    )


__all__: Sequence[str] = ["LabFindings", "LabResults"]
