"""A simulated device that sends native-format batches over HTTP, resending on failure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import httpx

log = logging.getLogger(__name__)


class HttpDevice:
    """Posts batches to /ingest/v1/readings with the device's secret; retries with the same
    message ids until the platform answers, as a real device must."""

    def __init__(self, client: httpx.AsyncClient, secret: str, *, max_attempts: int = 5) -> None:
        self._client = client
        self._headers = {"Authorization": f"Bearer {secret}"}
        self._max_attempts = max_attempts

    async def send(self, readings: Sequence[dict[str, Any]]) -> dict[str, Any]:
        delay = 0.2
        for attempt in range(1, self._max_attempts + 1):
            try:
                response = await self._client.post(
                    "/ingest/v1/readings", json={"readings": list(readings)}, headers=self._headers
                )
            except httpx.TransportError:
                if attempt == self._max_attempts:
                    raise
            else:
                if response.status_code == 202:
                    receipt: dict[str, Any] = response.json()
                    return receipt
                if response.status_code < 500:
                    response.raise_for_status()
                if attempt == self._max_attempts:
                    response.raise_for_status()
            log.info("ingest not acknowledged (attempt %d); resending", attempt)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        raise RuntimeError("unreachable")
