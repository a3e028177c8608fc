"""A simulated device that sends native-format batches over HTTP, resending on failure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import httpx
import orjson

log = logging.getLogger(__name__)


class HttpDevice:
    """Posts batches to /ingest/v1/readings with the device's secret; retries with the same
    message ids until the platform answers, as a real device must."""

    def __init__(self, client: httpx.AsyncClient, secret: str, *, max_attempts: int = 5) -> None:
        self._client = client
        self._headers = {"Authorization": f"Bearer {secret}"}
        self._max_attempts = max_attempts

    async def send(self, readings: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Send native readings; returns the receipt, raises if the platform refused the body."""
        receipt = await self.send_body(orjson.dumps({"readings": list(readings)}))
        if receipt is None:
            raise RuntimeError("the platform refused the batch as a whole")
        return receipt

    async def send_body(self, body: bytes) -> dict[str, Any] | None:
        """Send an encoded body. Returns the receipt, or None when the platform refused the
        body as a whole (4xx: resending would not help; it is in the dead letters)."""
        delay = 0.2
        for attempt in range(1, self._max_attempts + 1):
            try:
                response = await self._client.post(
                    "/ingest/v1/readings",
                    content=body,
                    headers={**self._headers, "Content-Type": "application/json"},
                )
            except httpx.TransportError:
                if attempt == self._max_attempts:
                    raise
            else:
                if response.status_code == 202:
                    receipt: dict[str, Any] = response.json()
                    return receipt
                if response.status_code in (401, 403):
                    response.raise_for_status()  # a credential problem, not a bad body
                if response.status_code < 500:
                    log.info("platform refused a batch (%d)", response.status_code)
                    return None
                if attempt == self._max_attempts:
                    response.raise_for_status()
            log.info("ingest not acknowledged (attempt %d); resending", attempt)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        raise RuntimeError("unreachable")
