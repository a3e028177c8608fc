"""The real app in-process with chosen Settings (small limits, say), for the security-header,
request-limit and rate-limit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from medmesh.app import create_app
from medmesh.config import Settings

# Health data the tests send or store, to look for in answers that must not carry it.
SECRET_VALUE = 187.25
SECRET_NAME = "Quixotica"


@asynccontextmanager
async def running_app(database_url: str, **settings: Any) -> AsyncIterator[FastAPI]:
    app = create_app(Settings(database_url=database_url, auto_migrate=False, **settings))
    async with app.router.lifespan_context(app):
        yield app


def http_client(
    app: FastAPI, client_address: str = "127.0.0.1", **kwargs: Any
) -> httpx.AsyncClient:
    """An httpx client talking to `app` in-process, as if from `client_address`."""
    transport = httpx.ASGITransport(app=app, client=(client_address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://test", **kwargs)
