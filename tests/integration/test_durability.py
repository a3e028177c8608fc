"""Nothing acknowledged is lost; nothing resent is stored twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from medmesh.app import create_app
from medmesh.config import Settings
from medmesh.domain.reading import observation_id
from medmesh.sim.http_device import HttpDevice
from medmesh.store.database import Database
from medmesh.store.observations import Observations
from medmesh.store.schema import observations
from tests.conftest import World
from tests.helpers import minute_series
from tests.live_server import live_server


async def test_acknowledged_readings_survive_a_server_crash(
    database_url: str, database: Database, world: World, tmp_path: Path
) -> None:
    acknowledged: list[str] = []
    batches = [minute_series(50, prefix=f"b{i}") for i in range(200)]

    async def send_until_the_server_dies(server_url: str, mine: list[list[dict[str, Any]]]) -> None:
        async with httpx.AsyncClient(base_url=server_url, timeout=5) as http:
            for batch in mine:
                try:
                    response = await http.post(
                        "/ingest/v1/readings",
                        json={"readings": batch},
                        headers=world.device_headers,
                    )
                except httpx.TransportError:
                    return
                assert response.status_code == 202
                acknowledged.extend(r["id"] for r in batch)

    with live_server(database_url, tmp_path / "server.log") as server:
        senders = [
            asyncio.create_task(send_until_the_server_dies(server.base_url, batches[i::4]))
            for i in range(4)
        ]
        while len(acknowledged) < 1000:
            await asyncio.sleep(0.01)
        server.kill()  # mid-stream, with requests in flight
        await asyncio.gather(*senders)

    assert 1000 <= len(acknowledged) < 200 * 50
    async with database.read() as conn:
        stored = await Observations(conn).existing_ids(
            [observation_id(world.device_id, m) for m in acknowledged]
        )
    assert len(stored) == len(acknowledged)


async def test_a_failure_between_commit_and_answer_is_resent_and_stored_once(
    database_url: str, database: Database, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medmesh.ingest.http as ingest_http

    real_receipt = ingest_http.IngestReceipt
    failures = []

    def crash_after_commit(**fields: Any) -> Any:
        if not failures:
            failures.append(fields)
            raise ConnectionResetError("simulated crash after commit, before the answer")
        return real_receipt(**fields)

    monkeypatch.setattr(ingest_http, "IngestReceipt", crash_after_commit)
    app = create_app(Settings(database_url=database_url, auto_migrate=False))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    batch = minute_series(20)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as http,
    ):
        receipt = await HttpDevice(http, world.device_secret).send(batch)

    assert failures and failures[0]["accepted"] == 20  # the first attempt had committed
    assert receipt == {"accepted": 0, "duplicates": 20, "rejected": []}
    async with database.read() as conn:
        count = (await conn.execute(select(func.count()).select_from(observations))).scalar_one()
    assert count == 20
