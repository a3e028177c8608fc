"""`medmesh serve`, `medmesh demo` and `medmesh ingest-worker`: running the platform."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Annotated, Any

import typer
import uvicorn

from medmesh import logs, wiring
from medmesh.config import Settings


def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port")] = None,
    mllp_port: Annotated[
        int | None, typer.Option(help="Also listen for HL7 v2 over MLLP on this port")
    ] = None,
    dicom_port: Annotated[
        int | None, typer.Option(help="Also listen for DICOM (C-STORE, C-FIND) on this port")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="API processes sharing the port (PostgreSQL only; events cross them on the "
            "PostgreSQL event bus)",
        ),
    ] = 1,
) -> None:
    """Run the platform: HTTP ingest and FHIR API; MQTT ingest when MEDMESH_MQTT_HOST is set;
    HL7 v2 MLLP and DICOM when their ports are given."""
    from medmesh.app import create_app

    settings = Settings()
    if mllp_port is not None:
        settings = settings.model_copy(update={"mllp_port": mllp_port})
    if dicom_port is not None:
        settings = settings.model_copy(update={"dicom_port": dicom_port})
    host = host if host is not None else settings.host
    port = port if port is not None else settings.port
    settings = settings.bound_to(host)
    if workers > 1:
        _check_workers(settings)
    typer.echo(f"medmesh listening on http://{host}:{port} (FHIR base http://{host}:{port}/fhir)")
    logs.configure()
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "info",
        # uvicorn's access log would record query strings (search parameters): RequestLog
        # instead; its other loggers go through medmesh's (escaping) log setup.
        "access_log": False,
        "log_config": None,
        **settings.proxy_options(),
    }
    if workers == 1:
        uvicorn.run(create_app(settings), **options)
        return
    # Each worker process builds its app from the environment: pass on what the command
    # line decided, and the event bus that reaches every process.
    os.environ["MEDMESH_SESSION_HTTPS_ONLY"] = str(settings.session_https_only).lower()
    os.environ["MEDMESH_EVENT_BUS"] = "postgres"
    typer.echo(f"{workers} worker processes; events on the PostgreSQL bus")
    uvicorn.run("medmesh.app:create_app", factory=True, workers=workers, **options)


def _check_workers(settings: Settings) -> None:
    """Several API processes share one PostgreSQL, its event bus and (when set) Redis for
    rate limits; listeners that must run once are run elsewhere."""
    if not settings.database_url.startswith("postgres"):
        raise typer.BadParameter("--workers above 1 needs PostgreSQL (MEDMESH_DATABASE_URL)")
    if settings.mllp_port is not None:
        raise typer.BadParameter(
            "MLLP listens on one port in one process: run `medmesh serve --mllp-port` apart "
            "from the --workers API processes"
        )
    if settings.dicom_port is not None:
        raise typer.BadParameter(
            "DICOM listens on one port in one process: run `medmesh dicom-worker` apart from "
            "the --workers API processes"
        )
    if settings.mqtt_host is not None:
        raise typer.BadParameter(
            "with --workers above 1, consume MQTT with `medmesh ingest-worker` processes "
            "(unset MEDMESH_MQTT_HOST for the API processes)"
        )
    if settings.redis_url is None:
        typer.echo(
            "warning: MEDMESH_REDIS_URL is not set: each worker process keeps its own rate "
            "limit and sign-in lockout counters",
            err=True,
        )


def demo(
    patients: Annotated[int, typer.Option(min=1, max=5, help="Simulated patients")] = 5,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between sends")] = 2.0,
    garbage: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Fraction a faulty extra device spoils")
    ] = 0.02,
    port: Annotated[int | None, typer.Option(help="TCP port")] = None,
) -> None:
    """Run the platform with simulated patients streaming readings into it (over MQTT when
    MEDMESH_MQTT_HOST is set, else HTTP), plus a faulty device that sends garbage."""
    from medmesh.demo import run_demo

    settings = Settings()
    if port is not None:
        settings = settings.model_copy(update={"port": port})
    try:
        asyncio.run(run_demo(settings, patients=patients, interval=interval, garbage=garbage))
    except KeyboardInterrupt:
        typer.echo("stopped")


def ingest_worker(
    client_id: Annotated[
        str | None,
        typer.Option(
            help="Unique and stable per worker (its broker session); "
            "default MEDMESH_MQTT_CLIENT_ID-worker-HOSTNAME"
        ),
    ] = None,
) -> None:
    """Run an MQTT ingest worker only (no HTTP); start several to share the load."""
    from medmesh.worker import run_ingest_worker

    settings = Settings()
    # Distinct from `serve`'s client id, so a worker and a server on one host do not take
    # over each other's broker session.
    default_id = f"{settings.mqtt_client_id}-worker-{socket.gethostname()}"
    settings = settings.model_copy(update={"mqtt_client_id": client_id or default_id})
    if wiring.mqtt_settings(settings) is None:
        typer.echo("error: set MEDMESH_MQTT_HOST to the broker", err=True)
        raise typer.Exit(2)
    try:
        asyncio.run(run_ingest_worker(settings))
    except KeyboardInterrupt:
        typer.echo("stopped")


def dicom_worker(
    port: Annotated[int | None, typer.Option(help="DICOM port (MEDMESH_DICOM_PORT)")] = None,
) -> None:
    """Run the DICOM listener only (no HTTP): C-STORE and C-FIND for the allowed modalities."""
    from medmesh.worker import run_dicom_worker

    settings = Settings()
    if port is not None:
        settings = settings.model_copy(update={"dicom_port": port})
    if settings.dicom_port is None:
        typer.echo("error: give --port or set MEDMESH_DICOM_PORT", err=True)
        raise typer.Exit(2)
    try:
        asyncio.run(run_dicom_worker(settings))
    except KeyboardInterrupt:
        typer.echo("stopped")
