"""`medmesh sim …`: simulated devices driving the platform."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Annotated

import typer

from medmesh import provisioning
from medmesh.commands._runner import run
from medmesh.store.database import Database

sim_app = typer.Typer(help="Simulated devices.", no_args_is_help=True)


@sim_app.command("load")
def sim_load(
    transport: Annotated[str, typer.Option(help="http or mqtt")] = "http",
    devices: Annotated[int, typer.Option(min=1, help="Simulated devices")] = 10,
    rate: Annotated[float, typer.Option(min=0.1, help="Total readings per second")] = 500.0,
    duration: Annotated[float, typer.Option(min=1.0, help="Seconds")] = 20.0,
    batch_size: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    garbage: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.0,
    base_url: Annotated[str, typer.Option(help="The platform, for http")] = "http://127.0.0.1:8000",
    mqtt_host: Annotated[str, typer.Option()] = "127.0.0.1",
    mqtt_port: Annotated[int, typer.Option()] = 1883,
    ca_file: Annotated[str | None, typer.Option(help="Broker CA, for MQTT over TLS")] = None,
) -> None:
    """Drive N simulated devices at a chosen rate and report the throughput achieved.

    Registers the devices (and a patient each) in the configured database first. Over MQTT
    the broker must accept them: the machine's anonymous broker does.
    """
    import httpx

    from medmesh.sim.load import (
        DeviceLogin,
        LoadPlan,
        check_loopback,
        run_http_load,
        run_mqtt_load,
    )

    if transport not in ("http", "mqtt"):
        raise typer.BadParameter("transport is http or mqtt")
    try:  # before anything is registered
        check_loopback(httpx.URL(base_url).host if transport == "http" else mqtt_host, False)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    async def provision(db: Database) -> list[DeviceLogin]:
        logins = []
        for n in range(devices):
            patient = await provisioning.create_patient(
                db,
                family=f"Load {n}",
                given="Sim",
                identifier=f"load-{uuid.uuid4()}",
                identifier_system="urn:medmesh:load",
            )
            credential = await provisioning.register_device(db, display_name=f"load device {n}")
            await provisioning.assign_device(
                db, credential.device_id, patient.id, datetime(2000, 1, 1, tzinfo=UTC)
            )
            logins.append(DeviceLogin(credential.device_id, credential.secret))
        return logins

    logins = run(provision)
    plan = LoadPlan(logins, rate=rate, duration=duration, batch_size=batch_size, garbage=garbage)
    if transport == "http":
        report = asyncio.run(run_http_load(base_url, plan))
    else:
        mqtt_plan = LoadPlan(
            [DeviceLogin(d.device_id, None) for d in logins],
            rate=rate,
            duration=duration,
            batch_size=batch_size,
            garbage=garbage,
        )
        report = asyncio.run(
            run_mqtt_load(mqtt_plan, host=mqtt_host, port=mqtt_port, ca_file=ca_file)
        )
    typer.echo(report.summary())


@sim_app.command("modality")
def sim_modality(
    patient_id: Annotated[str, typer.Option(help="PatientID the study carries (an MRN)")],
    issuer: Annotated[
        str | None, typer.Option(help="IssuerOfPatientID: the identifier's system")
    ] = None,
    host: Annotated[str, typer.Option(help="medmesh's DICOM listener")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="MEDMESH_DICOM_PORT")] = 11112,
    calling_ae: Annotated[str, typer.Option(help="this modality's AE title")] = "MEDMESH_SIM",
    called_ae: Annotated[str, typer.Option(help="MEDMESH_DICOM_AE_TITLE")] = "MEDMESH",
    slices: Annotated[int, typer.Option(min=1, max=512)] = 24,
) -> None:
    """Send a synthetic MRI head series over C-STORE, like a scanner would.

    The calling AE title must be on MEDMESH_DICOM_ALLOWED_AES with this host's address
    (e.g. MEDMESH_SIM@127.0.0.1).
    """
    from medmesh.sim.modality import send_synthetic_mr

    try:
        result = send_synthetic_mr(
            host=host,
            port=port,
            calling_ae=calling_ae,
            called_ae=called_ae,
            patient_id=patient_id,
            issuer=issuer,
            patient_name="Sim^Patient",
            slices=slices,
        )
    except ConnectionError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"sent {result.sent} instance(s) over C-STORE; {result.failed} refused")
    if result.failed:
        raise typer.Exit(1)
