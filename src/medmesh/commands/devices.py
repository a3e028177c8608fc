"""`medmesh device …` and `medmesh broker-user`: devices, their secrets, assignments and broker
logins."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from medmesh import provisioning
from medmesh.access.identity.credentials import new_secret
from medmesh.access.identity.mosquitto import set_password
from medmesh.commands._runner import run
from medmesh.crypto.public_keys import ed25519_public_key
from medmesh.domain.registry import device_type_token
from medmesh.store.database import Database
from medmesh.store.registry import Devices

device_app = typer.Typer(help="Devices and their assignment to patients.", no_args_is_help=True)


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


PublicKeyOption = Annotated[
    Path | None,
    typer.Option(
        "--public-key",
        help="The device's Ed25519 public key for signed readings: a PEM file, or a file "
        "holding the raw 32 bytes in base64 (docs/signed-payloads.md)",
    ),
]
RequireSignatureOption = Annotated[
    bool,
    typer.Option(
        "--require-signature",
        help="Refuse this device's readings unless they are signed (needs --public-key)",
    ),
]


@device_app.command("register")
def device_register(
    name: Annotated[str, typer.Option(help="A name people recognise")],
    manufacturer: Annotated[str | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option()] = None,
    serial: Annotated[str | None, typer.Option()] = None,
    device_type: Annotated[
        str | None,
        typer.Option(
            "--type",
            help="What kind of device: system|code, or a SNOMED CT code "
            "(706172005 physiologic monitoring system, 258057004 blood pressure monitor...)",
        ),
    ] = None,
    shared_monitor: Annotated[
        bool,
        typer.Option(
            "--shared-monitor",
            help="A bedside monitor shared by patients: over HL7, its patient is the one PID "
            "names. Without it, PID must name the patient the device is assigned to.",
        ),
    ] = False,
    public_key: PublicKeyOption = None,
    require_signature: RequireSignatureOption = False,
) -> None:
    """Register a device; prints its id and its secret (shown only this once)."""
    if device_type is not None:
        try:
            device_type_token(device_type)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--type") from None
    key = _read_public_key(public_key, require_signature)

    async def register(db: Database) -> provisioning.DeviceCredential:
        credential = await provisioning.register_device(
            db,
            display_name=name,
            manufacturer=manufacturer,
            model=model,
            serial_number=serial,
            shared_monitor=shared_monitor,
            device_type=device_type,
        )
        if key is not None:
            await provisioning.set_signing_key(
                db, credential.device_id, key, required=require_signature
            )
        return credential

    credential = run(register)
    typer.echo(f"device id:     {credential.device_id}")
    typer.echo(f"device secret: {credential.secret}")
    typer.echo("Store the secret on the device now; medmesh keeps only its hash.")
    if key is not None:
        must = "must sign" if require_signature else "may sign"
        typer.echo(f"signing key set: the device {must} its readings (docs/signed-payloads.md)")


def _read_public_key(path: Path | None, require_signature: bool) -> bytes | None:
    if path is None:
        if require_signature:
            raise typer.BadParameter("needs --public-key", param_hint="--require-signature")
        return None
    try:
        text = path.read_bytes()
        ed25519_public_key(text)  # checked before anything is registered
    except OSError as exc:
        message = f"cannot read {path}: {exc.strerror}"
        raise typer.BadParameter(message, param_hint="--public-key") from None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--public-key") from None
    return text


@device_app.command("signing-key")
def device_signing_key(
    device_id: str,
    public_key: Annotated[Path, typer.Argument(help="PEM file, or the raw 32-byte key in base64")],
    require_signature: Annotated[
        bool | None,
        typer.Option(
            "--require-signature/--allow-unsigned",
            help="Whether the device must sign; unchanged if not given",
        ),
    ] = None,
) -> None:
    """Set or rotate a device's Ed25519 public key; the old key stops working at once."""
    key = _read_public_key(public_key, False)
    assert key is not None
    stored = run(
        lambda db: provisioning.set_signing_key(db, device_id, key, required=require_signature)
    )
    must = "must sign" if stored.required else "may sign (unsigned readings are accepted)"
    typer.echo(f"signing key {stored.key_id} set: device {device_id} {must}")


@device_app.command("require-signature")
def device_require_signature(
    device_id: str,
    off: Annotated[bool, typer.Option("--off", help="Accept unsigned readings again")] = False,
) -> None:
    """Refuse the device's unsigned readings (it needs a signing key first)."""
    run(lambda db: provisioning.require_signatures(db, device_id, not off))
    state = "may send unsigned readings" if off else "must sign its readings"
    typer.echo(f"device {device_id} {state}")


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


def broker_user(
    username: Annotated[str, typer.Argument(help="e.g. medmesh-ingest")],
    password_file: Annotated[Path, typer.Option()] = Path("/etc/mosquitto/medmesh/passwd"),
) -> None:
    """Add a platform (non-device) user, such as the ingest workers', to the password file."""
    password = new_secret("mqp")
    set_password(password_file, username, password)
    typer.echo(f"broker password for {username}: {password}")


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
