"""A real third-party FHIR client (fhirpy) searches and pages through a live server."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

from tests.conftest import World
from tests.helpers import minute_series
from tests.live_server import live_server


async def test_fhirpy_searches_and_pages_through_observations(
    database_url: str, world: World, tmp_path: Path
) -> None:
    with live_server(database_url, tmp_path / "server.log") as server:
        # 199 heart-rate readings one minute apart from 08:00, sent in two batches.
        readings = minute_series(199)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            for batch in (readings[:100], readings[100:]):
                response = await http.post(
                    "/ingest/v1/readings", json={"readings": batch}, headers=world.device_headers
                )
                assert response.status_code == 202
                assert response.json()["accepted"] == len(batch)
        client = AsyncFHIRClient(f"{server.base_url}/fhir", authorization=f"Bearer {world.token}")

        patient = await client.resources("Patient").search(identifier="MRN-1").get()
        assert patient.id == world.patient_id

        search = (
            client.resources("Observation")
            .search(patient=world.patient_id, code="http://loinc.org|8867-4")
            .sort("date")
            .limit(30)
        )
        first_page = await search.fetch()
        everything = await search.fetch_all()
        assert len(first_page) == 30
        assert len(everything) == 199  # 7 pages of 30
        assert len({o.id for o in everything}) == 199
        times = [o.effectiveDateTime for o in everything]
        assert times == sorted(times)
        assert all(o.subject.reference == f"Patient/{world.patient_id}" for o in everything)

        recent = await (
            client.resources("Observation")
            .search(patient=world.patient_id, date__ge="2026-11-24T09:00:00Z")
            .fetch_all()
        )
        assert len(recent) == 199 - 60  # from 09:00 on

        with pytest.raises(ResourceNotFound):
            await client.reference("Observation", "missing").to_resource()
        # An unknown parameter is ignored (lenient); a bad value of a known one is refused.
        ignored = await client.resources("Observation").search(flavour="mint").limit(5).fetch()
        assert len(ignored) == 5
        with pytest.raises(OperationOutcome):
            await client.resources("Observation").search(date="2026-13-01").fetch()
