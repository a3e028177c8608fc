"""The Observation search renders its resources straight from the rows (fhir/router.py,
`resources.simple_observation`); each must be the resource the stored-observation path
(`resources.observation`, used by the read interaction) renders, for every kind of reading,
and valid R4B, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import orjson
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation

from medmesh.domain.reading import MeasuredValue, Reading
from medmesh.domain.vocabulary import measure_by_key
from medmesh.fhir import resources
from medmesh.http.responses import FhirResponse
from medmesh.store.database import Database
from medmesh.store.lab_results import LabFindings, LabResults
from medmesh.store.observations import Observations
from tests.conftest import World

TAKEN = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
RECEIVED = datetime(2026, 3, 2, 8, 0, 3, 250_000, tzinfo=UTC)

# (measure key, values by component code or None for a single value, lab findings)
KINDS: list[tuple[str, dict[str, float] | float, LabFindings | None]] = [
    ("heart-rate", 72.0, None),  # a whole number: rendered as an integer
    ("oxygen-saturation", 96.5, None),
    ("body-temperature", 37.25, None),  # a unit with its own display (°C)
    ("body-weight", 81.3, None),
    ("steps", 4200.0, None),
    ("blood-pressure", {"8480-6": 128.0, "8462-4": 82.5}, None),  # components
    ("potassium", 5.9, LabFindings("3.5-5.1", "H")),  # reference range and interpretation
    ("sodium", 139.0, LabFindings("<145", None)),  # one-sided range, no interpretation
    ("creatinine", 1.1, None),  # a laboratory code without findings
]


def _reading(world: World, n: int, key: str, value: dict[str, float] | float) -> Reading:
    measure = measure_by_key(key)
    assert measure is not None
    if isinstance(value, dict):
        units = {c.code: c.unit for c in measure.components}
        values = tuple(MeasuredValue(code, v, units[code]) for code, v in value.items())
    else:
        assert measure.quantity is not None
        values = (MeasuredValue(measure.code, value, measure.quantity.unit),)
    return Reading(
        device_id=world.device_id,
        message_id=f"kind-{n}",
        patient_id=world.patient_id,
        measure=measure,
        effective=TAKEN + timedelta(minutes=n, microseconds=n * 1001),
        values=values,
    )


async def test_searched_observations_equal_the_stored_ones_for_every_kind_of_reading(
    database: Database, world: World, client: httpx.AsyncClient
) -> None:
    readings = [_reading(world, n, key, value) for n, (key, value, _) in enumerate(KINDS)]
    async with database.write() as conn:
        await Observations(conn).add_batch(readings, RECEIVED)
        await LabResults(conn).add_for_stored(
            {
                r.observation_id: findings
                for r, (_, _, findings) in zip(readings, KINDS, strict=True)
                if findings is not None
            }
        )

    response = await client.get(
        "/fhir/Observation",
        params={"patient": world.patient_id, "_count": "1000"},
        headers=world.reader_headers,
    )
    assert response.status_code == 200, response.text
    bundle = response.json()
    Bundle.model_validate(bundle)
    searched = {e["resource"]["id"]: e["resource"] for e in bundle["entry"]}
    assert set(searched) == {r.observation_id for r in readings}

    async with database.read() as conn:
        stored = await Observations(conn).get_many(list(searched))
    for observation in stored:
        expected = resources.observation(observation)
        assert searched[observation.id] == expected, observation.code
        Observation.model_validate(searched[observation.id])
    by_code = {r["code"]["coding"][0]["code"]: r for r in searched.values()}
    assert by_code["8867-4"]["valueQuantity"]["value"] == 72
    assert by_code["8310-5"]["valueQuantity"]["unit"] == "°C"
    assert [c["valueQuantity"]["value"] for c in by_code["85354-9"]["component"]] == [128, 82.5]
    assert by_code["2823-3"]["interpretation"][0]["coding"][0]["code"] == "H"
    assert by_code["2823-3"]["referenceRange"][0]["low"]["value"] == 3.5


async def test_the_row_rendering_of_a_single_value_equals_the_stored_rendering(
    database: Database, world: World
) -> None:
    reading = _reading(world, 0, "body-temperature", 36.6)
    async with database.write() as conn:
        await Observations(conn).add_batch([reading], RECEIVED)
        stored = await Observations(conn).get(reading.observation_id)
    value = stored.values[0]
    row_rendered = resources.simple_observation(
        stored.id,
        stored.patient_id,
        stored.device_id,
        stored.code,
        stored.effective,
        stored.received_at,
        value.value,
        value.unit,
    )
    # The row's rendering keeps its times as datetimes for the response to write.
    assert row_rendered["effectiveDateTime"] == stored.effective
    written = FhirResponse(row_rendered).body
    assert written == FhirResponse(resources.observation(stored)).body
    assert orjson.loads(written)["issued"] == "2026-03-02T08:00:03.250000Z"
