"""The `medmesh` command line."""

from __future__ import annotations

import asyncio
import socket
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from medmesh import logs, provisioning, wiring
from medmesh.access.identity.credentials import API_TOKEN_PREFIX, hash_secret, new_secret
from medmesh.access.identity.mosquitto import set_password
from medmesh.access.identity.principals import DEFAULT_ORGANIZATION
from medmesh.commands import users
from medmesh.commands._runner import run
from medmesh.commands.audit import audit_app
from medmesh.commands.clients import app as clients_app
from medmesh.commands.erasure import add_erasure_commands
from medmesh.commands.keys import keys_app
from medmesh.config import Settings
from medmesh.domain.errors import NotFound
from medmesh.store.consents import CareTeams
from medmesh.store.database import Database
from medmesh.store.registry import Devices
from medmesh.store.tokens import ApiTokens
from medmesh.store.users import Users

app = typer.Typer(help="medmesh: connected medical devices in, FHIR R4 out.", no_args_is_help=True)
db_app = typer.Typer(help="Database administration.", no_args_is_help=True)
patient_app = typer.Typer(help="Patients.", no_args_is_help=True)
device_app = typer.Typer(help="Devices and their assignment to patients.", no_args_is_help=True)
token_app = typer.Typer(help="API bearer tokens.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(patient_app, name="patient")
app.add_typer(device_app, name="device")
app.add_typer(token_app, name="token")
care_team_app = typer.Typer(
    help="Who cares for a patient (and so may see their record).", no_args_is_help=True
)
app.add_typer(care_team_app, name="care-team")
sim_app = typer.Typer(help="Simulated devices.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")
app.add_typer(audit_app, name="audit")
app.add_typer(clients_app, name="client")
app.add_typer(users.user_app, name="user")
app.add_typer(users.org_app, name="org")
app.add_typer(keys_app, name="keys")
add_erasure_commands(patient_app)


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port")] = None,
    mllp_port: Annotated[
        int | None, typer.Option(help="Also listen for HL7 v2 over MLLP on this port")
    ] = None,
) -> None:
    """Run the platform: HTTP ingest and FHIR API; MQTT ingest when MEDMESH_MQTT_HOST is set;
    HL7 v2 MLLP when a port is given."""
    from medmesh.app import create_app

    settings = Settings()
    if mllp_port is not None:
        settings = settings.model_copy(update={"mllp_port": mllp_port})
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


@app.command()
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


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all database migrations."""

    async def noop(_: Database) -> None:
        return None

    run(noop)
    typer.echo("database is up to date")


@patient_app.command("create")
def patient_create(
    family: Annotated[str, typer.Option(help="Family name")],
    given: Annotated[str, typer.Option(help="Given name")],
    identifier: Annotated[str, typer.Option(help="Medical record number")],
    system: Annotated[
        str, typer.Option(help="Identifier system")
    ] = provisioning.DEFAULT_IDENTIFIER_SYSTEM,
    birth_date: Annotated[str | None, typer.Option(help="YYYY-MM-DD")] = None,
    gender: Annotated[str | None, typer.Option(help="male, female, other or unknown")] = None,
) -> None:
    """Create a patient and print their id."""
    if gender not in (None, "male", "female", "other", "unknown"):
        raise typer.BadParameter("gender must be male, female, other or unknown")
    try:
        born = date.fromisoformat(birth_date) if birth_date else None
    except ValueError:
        raise typer.BadParameter("birth date must be YYYY-MM-DD") from None
    patient = run(
        lambda db: provisioning.create_patient(
            db,
            family=family,
            given=given,
            identifier=identifier,
            identifier_system=system,
            birth_date=born,
            gender=gender,
        )
    )
    typer.echo(patient.id)


@device_app.command("register")
def device_register(
    name: Annotated[str, typer.Option(help="A name people recognise")],
    manufacturer: Annotated[str | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option()] = None,
    serial: Annotated[str | None, typer.Option()] = None,
    shared_monitor: Annotated[
        bool,
        typer.Option(
            "--shared-monitor",
            help="A bedside monitor shared by patients: over HL7, its patient is the one PID "
            "names. Without it, PID must name the patient the device is assigned to.",
        ),
    ] = False,
) -> None:
    """Register a device; prints its id and its secret (shown only this once)."""
    credential = run(
        lambda db: provisioning.register_device(
            db,
            display_name=name,
            manufacturer=manufacturer,
            model=model,
            serial_number=serial,
            shared_monitor=shared_monitor,
        )
    )
    typer.echo(f"device id:     {credential.device_id}")
    typer.echo(f"device secret: {credential.secret}")
    typer.echo("Store the secret on the device now; medmesh keeps only its hash.")


@device_app.command("shared-monitor")
def device_shared_monitor(
    device_id: str,
    off: Annotated[bool, typer.Option("--off", help="Make it an ordinary device again")] = False,
) -> None:
    """Mark a device as a shared bedside monitor: over HL7, its patient is the one PID names."""
    run(lambda db: provisioning.set_shared_monitor(db, device_id, not off))
    state = "an ordinary device (patient from its assignment)" if off else "a shared monitor"
    typer.echo(f"device {device_id} is now {state}")


@device_app.command("broker-credentials")
def device_broker_credentials(
    device_id: str,
    password_file: Annotated[
        Path, typer.Option(help="Mosquitto password file to add the device to")
    ] = Path("/etc/mosquitto/medmesh/passwd"),
) -> None:
    """Give a device its own MQTT login (user name = device id) in a Mosquitto password file.

    Prints the password once; reload Mosquitto (SIGHUP) to apply.
    """

    async def check(db: Database) -> None:
        async with db.read() as conn:
            await Devices(conn).get(device_id)

    run(check)
    password = new_secret("mqp")
    set_password(password_file, device_id, password)
    typer.echo(f"broker user:     {device_id}")
    typer.echo(f"broker password: {password}")
    typer.echo(f"written to {password_file}; reload the broker (kill -HUP) to apply.")


@app.command("broker-user")
def broker_user(
    username: Annotated[str, typer.Argument(help="e.g. medmesh-ingest")],
    password_file: Annotated[Path, typer.Option()] = Path("/etc/mosquitto/medmesh/passwd"),
) -> None:
    """Add a platform (non-device) user, such as the ingest workers', to the password file."""
    password = new_secret("mqp")
    set_password(password_file, username, password)
    typer.echo(f"broker password for {username}: {password}")


@app.command("ingest-worker")
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


@device_app.command("rotate-secret")
def device_rotate_secret(device_id: str) -> None:
    """Give a device a new secret; the old one stops working at once."""
    credential = run(lambda db: provisioning.rotate_device_secret(db, device_id))
    typer.echo(f"device secret: {credential.secret}")


@device_app.command("assign")
def device_assign(
    device_id: str,
    patient_id: str,
    start: Annotated[
        datetime | None, typer.Option(help="From when (ISO 8601, UTC if no offset); default now")
    ] = None,
) -> None:
    """Assign a device to a patient from a moment on (ending any open assignment)."""
    run(lambda db: provisioning.assign_device(db, device_id, patient_id, _aware(start)))
    typer.echo("assigned")


@token_app.command("revoke")
def token_revoke(token: Annotated[str, typer.Argument(help="The token (mmt_…) or its id")]) -> None:
    """Revoke an API token; it stops working on the next request (dashboard sessions too)."""

    async def revoke(db: Database) -> bool:
        async with db.write() as conn:
            tokens = ApiTokens(conn)
            token_id = token
            if token.startswith(f"{API_TOKEN_PREFIX}_"):
                record = await tokens.find_by_hash(hash_secret(token))
                if record is None:
                    return False
                token_id = record.id
            return await tokens.revoke(token_id)

    if not run(revoke):
        typer.echo("error: no such active token", err=True)
        raise typer.Exit(1)
    typer.echo("revoked")


@token_app.command("create")
def token_create(
    scope: Annotated[str, typer.Option(help='SMART scopes, space-separated, e.g. "user/*.rs"')],
    user: Annotated[
        str | None, typer.Option(help="Username of the account the token is for")
    ] = None,
    service: Annotated[
        str | None,
        typer.Option(help="Name of an integration of the organisation (system/ scopes)"),
    ] = None,
    days: Annotated[
        int | None,
        typer.Option(min=1, help="User tokens: expire after N days (default: until revoked)"),
    ] = None,
    patient: Annotated[
        str | None,
        typer.Option(help="Clinician tokens with patient/ scopes: the launch patient's id"),
    ] = None,
    organization: Annotated[
        str | None, typer.Option(help="Service tokens: the organisation (default: default)")
    ] = None,
) -> None:
    """Issue an API bearer token for a user account (--user) or a service (--service); the
    token is shown only this once."""
    if (user is None) == (service is None):
        raise typer.BadParameter("give either --user USERNAME or --service NAME")
    if service is not None:
        if days is not None or patient is not None:
            raise typer.BadParameter("--days and --patient are for user tokens")
        if not service.strip():
            raise typer.BadParameter("--service needs a name")
        token = run(
            lambda db: provisioning.issue_service_token(
                db,
                name=service,
                organization_id=organization or DEFAULT_ORGANIZATION,
                scopes=scope,
            )
        )
        typer.echo(token)
        return
    if organization is not None:
        raise typer.BadParameter("--organization is for service tokens; a user's is their own")
    username = user or ""

    async def issue(db: Database) -> str:
        async with db.read() as conn:
            account = await Users(conn).find_by_username(username)
        if account is None:
            raise NotFound("no user account with this username")
        lifetime = timedelta(days=days) if days is not None else None
        return await provisioning.issue_user_token(
            db, user_id=account.id, scopes=scope, lifetime=lifetime, patient_id=patient
        )

    typer.echo(run(issue))


async def _user_id(database: Database, username: str) -> str:
    async with database.read() as conn:
        user = await Users(conn).find_by_username(username)
    if user is None:
        raise NotFound(f"no user named {username}")
    return user.id


@care_team_app.command("add")
def care_team_add(
    patient_id: Annotated[str, typer.Argument(help="The patient's id")],
    username: Annotated[str, typer.Argument(help="A clinician's username")],
    role: Annotated[str, typer.Option(help="primary, nurse, escalation or member")] = "member",
) -> None:
    """Put a clinician on a patient's care team."""

    async def add(database: Database) -> None:
        user_id = await _user_id(database, username)
        await provisioning.add_to_care_team(
            database, patient_id, user_id, role=role, added_by="cli"
        )

    run(add)
    typer.echo(f"{username} is on the care team ({role})")


@care_team_app.command("remove")
def care_team_remove(
    patient_id: Annotated[str, typer.Argument(help="The patient's id")],
    username: Annotated[str, typer.Argument(help="A clinician's username")],
) -> None:
    """Take a clinician off a patient's care team."""

    async def remove(database: Database) -> bool:
        user_id = await _user_id(database, username)
        async with database.write() as conn:
            return await CareTeams(conn).remove(patient_id, user_id)

    if not run(remove):
        typer.echo("error: not on this care team", err=True)
        raise typer.Exit(1)
    typer.echo("removed")


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
