"""A patient's rule state: the readings the alert rules read, from a horizon on, so that a
committed batch is merged into it rather than the rules' window being read again.

The rules keep no other memory: their hysteresis lives in the patient's active alerts, and
everything else is recomputed from these readings, so judging from the state gives exactly
the outcomes judging from the stored history gives (tests/integration/test_rule_state.py).
The state is complete from `horizon` on (every reading of the rules' codes at or after it that
has been through the rules is in it); older readings are dropped as the newest moves on.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson

from medmesh.domain.reading import MeasuredValue, Reading
from medmesh.rules import catalog
from medmesh.rules.series import Point
from medmesh.store.observations import StoredObservation

# Kept beyond the rules' lookback, so a batch a little older than the newest reading (a device
# catching up) is still judged from the state; an older one rebuilds it from history.
SLACK = timedelta(minutes=15)
TRIM_STEP = timedelta(minutes=5)
FORMAT = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _moment(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def observed(reading: Reading) -> StoredObservation:
    """A committed reading as the rules see it (as read back from the store)."""
    if reading.measure.is_panel:
        values = reading.values
    else:  # stored single values carry the observation's code
        values = (MeasuredValue(reading.measure.code, reading.values[0].value, ""),)
    return StoredObservation(
        reading.observation_id,
        reading.patient_id,
        reading.device_id,
        "",
        reading.measure.code,
        reading.effective,
        values,
        reading.effective,
    )


def _order(point: Point) -> tuple[datetime, str]:
    return point.at, point.observation_id  # as `series` orders points


def _at(point: Point) -> datetime:
    return point.at


@dataclass(slots=True)
class RuleState:
    """What the rules read of one patient's readings from `horizon` on.

    Kept as the rules use it: per value code (a panel's components apart), points in the order
    `series` gives, so a window is two binary searches and a slice. Each reading's encoded
    form is made once, when it is merged, so storing the state joins bytes rather than
    encoding every reading again.
    """

    patient_id: str
    horizon: datetime
    newest: datetime | None = None
    _encoded: dict[str, tuple[datetime, bytes]] = field(default_factory=dict)
    _points: dict[str, list[Point]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._encoded)

    def covers(self, since: datetime) -> bool:
        return since >= self.horizon

    def merge(self, found: Iterable[StoredObservation]) -> None:
        """Add readings (again is harmless); those before the horizon or of codes no rule
        reads are left out."""
        for obs in found:
            if (
                obs.code not in catalog.RULE_CODES
                or obs.effective < self.horizon
                or obs.id in self._encoded
            ):
                continue
            row = [
                _micros(obs.effective),
                obs.code,
                obs.id,
                obs.device_id,
                [[v.code, v.value] for v in obs.values],
            ]
            self._encoded[obs.id] = (obs.effective, orjson.dumps(row))
            for value in obs.values:
                points = self._points.setdefault(value.code, [])
                point = Point(obs.effective, value.value, obs.id, obs.device_id)
                if not points or _order(points[-1]) < _order(point):
                    points.append(point)  # the usual case: readings arrive in time order
                else:
                    insort(points, point, key=_order)
            if self.newest is None or obs.effective > self.newest:
                self.newest = obs.effective

    def trim(self, lookback: timedelta) -> None:
        """Drop what no batch judged from the state reads any more (in steps, not on every
        batch, so that dropping costs little per batch)."""
        if self.newest is None:
            return
        cut = self.newest - lookback - SLACK
        if cut - self.horizon < TRIM_STEP:
            return
        self.horizon = cut
        self._encoded = {k: e for k, e in self._encoded.items() if e[0] >= cut}
        for points in self._points.values():
            del points[: bisect_left(points, cut, key=_at)]

    def window(self, since: datetime, until: datetime) -> catalog.SeriesOf:
        """`series_of` for the rules: points with since <= time <= until."""

        def series_of(codes: Sequence[str]) -> list[Point]:
            parts = []
            for code in codes:
                points = self._points.get(code, [])
                low = bisect_left(points, since, key=_at)
                parts.append(points[low : bisect_right(points, until, lo=low, key=_at)])
            if len(parts) == 1:
                return parts[0]
            merged = [point for part in parts for point in part]
            merged.sort(key=_order)
            return merged

        return series_of

    def encode(self) -> bytes:
        head = f'{{"format":{FORMAT},"horizon":{_micros(self.horizon)},"readings":['.encode()
        return head + b",".join(encoded for _, encoded in self._encoded.values()) + b"]}"

    @classmethod
    def decode(cls, patient_id: str, data: bytes) -> RuleState | None:
        """The state in `data`; None when it is in a format this version does not read."""
        raw = orjson.loads(data)
        if raw.get("format") != FORMAT:
            return None
        state = cls(patient_id, _moment(raw["horizon"]))
        state.merge(
            StoredObservation(
                oid,
                patient_id,
                device_id,
                "",
                code,
                (moment := _moment(at)),
                tuple(MeasuredValue(c, v, "") for c, v in values),
                moment,
            )
            for at, code, oid, device_id, values in raw["readings"]
        )
        return state
