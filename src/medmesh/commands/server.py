"""`medmesh serve`, `medmesh demo` and `medmesh ingest-worker`: running the platform."""

from __future__ import annotations

import asyncio
import socket
from typing import Annotated

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
    typer.echo(f"medmesh listening on http://{host}:{port} (FHIR base http://{host}:{port}/fhir)")
    logs.configure()
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        # uvicorn's access log would record query strings (search parameters): RequestLog
        # instead; its other loggers go through medmesh's (escaping) log setup.
        access_log=False,
        log_config=None,
        **settings.proxy_options(),
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
