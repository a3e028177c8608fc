"""Settings of a medmesh deployment, read from MEDMESH_* environment variables (or .env)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDMESH_", env_file=".env", extra="ignore")

    database_url: str = Field(
        "sqlite:///./medmesh.db",
        description="sqlite:///path.db (embedded default) or postgresql://user@host/db",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    auto_migrate: bool = Field(True, description="Apply database migrations at start-up")
    max_clock_skew_seconds: int = Field(
        300, description="How far ahead of the server clock a reading's time may be"
    )
    max_batch_readings: int = 1000
    max_body_bytes: int = 1_000_000
