"""`medmesh ca init | crl` and `medmesh device cert | revoke`: the device CA and the devices'
client certificates (docs/device-certificates.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medmesh import wiring
from medmesh.commands._runner import run_with_database
from medmesh.config import Settings
from medmesh.crypto import device_ca
from medmesh.provisioning import device_certificates
from medmesh.store.database import Database

ca_app = typer.Typer(help="The device CA (docs/device-certificates.md).", no_args_is_help=True)


@ca_app.command("init")
def ca_init(
    name: Annotated[str, typer.Option(help="The CA's common name")] = "medmesh device CA",
) -> None:
    """Make the device CA in MEDMESH_DEVICE_CA_DIR: ca.key (mode 0600), ca.crt, an empty CRL."""
    settings = Settings()
    directory = wiring.device_ca_dir(settings)
    try:
        device_ca.create_ca(directory, name)
    except FileExistsError as exc:
        typer.echo(f"error: {exc}; it was kept", err=True)
        raise typer.Exit(1) from None
    crl = wiring.device_crl_file(settings)
    if crl != directory / device_ca.CRL:
        device_ca.write_public(crl, (directory / device_ca.CRL).read_bytes())
    typer.echo(f"device CA certificate: {directory / device_ca.CA_CERT}")
    typer.echo(f"device CA key:         {directory / device_ca.CA_KEY} (mode 0600)")
    typer.echo(f"CRL:                   {crl}")


@ca_app.command("crl")
def ca_crl() -> None:
    """Publish the CRL again (it is valid for 7 days: run this daily, e.g. from cron)."""

    async def action(database: Database, settings: Settings) -> int:
        ca = device_ca.load_ca(wiring.device_ca_dir(settings), with_key=True)
        return await device_certificates.publish_crl(database, ca, wiring.device_crl_file(settings))

    listed = run_with_database(action)
    typer.echo(f"CRL published to {wiring.device_crl_file(Settings())}: {listed} revoked")


def device_cert(
    device_id: str,
    days: Annotated[
        int | None,
        typer.Option(min=1, max=825, help="Validity; default MEDMESH_DEVICE_CERTIFICATE_DAYS"),
    ] = None,
    csr: Annotated[
        Path | None,
        typer.Option(help="A PEM CSR made on the device: its key never leaves the device"),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Directory to write DEVICE.crt (and DEVICE.key) to")
    ] = Path("."),
) -> None:
    """Issue a client certificate whose subject CN is the device id. Without --csr a new key
    is made here and written once to DEVICE.key (mode 0600): medmesh keeps no copy."""
    csr_pem = csr.read_bytes() if csr is not None else None
    cert_path, key_path = out / f"{device_id}.crt", out / f"{device_id}.key"
    if csr_pem is None and key_path.exists():
        typer.echo(f"error: {key_path} exists; move it away first", err=True)
        raise typer.Exit(1)

    async def action(database: Database, settings: Settings) -> device_ca.IssuedCertificate:
        return await device_certificates.issue_certificate(
            database,
            wiring.device_ca_dir(settings),
            device_id,
            days=days or settings.device_certificate_days,
            csr_pem=csr_pem,
        )

    issued = run_with_database(action)
    device_ca.write_public(cert_path, issued.certificate_pem)
    if issued.key_pem is not None:
        device_ca.write_private(key_path, issued.key_pem)
    typer.echo(f"certificate: {cert_path}")
    if issued.key_pem is not None:
        typer.echo(f"key:         {key_path} (mode 0600; install it on the device, then delete it)")
    typer.echo(f"serial:      {issued.serial}")
    typer.echo(f"not after:   {issued.not_after.isoformat()}")


def device_revoke(
    device_or_serial: Annotated[
        str, typer.Argument(help="A certificate serial (hex), or a device id: all its certificates")
    ],
) -> None:
    """Revoke a certificate, or all of a device's, and publish the CRL (then reload Mosquitto:
    kill -HUP)."""

    async def action(database: Database, settings: Settings) -> list[str]:
        revoked = await device_certificates.revoke_certificates(
            database,
            wiring.device_ca_dir(settings),
            device_or_serial,
            wiring.device_crl_file(settings),
        )
        return [c.serial for c in revoked]

    serials = run_with_database(action)
    for serial in serials:
        typer.echo(f"revoked {serial}")
    if not serials:
        typer.echo("already revoked")
    typer.echo(f"CRL published to {wiring.device_crl_file(Settings())}; reload the broker")


def add_certificate_commands(device_app: typer.Typer) -> None:
    device_app.command("cert")(device_cert)
    device_app.command("revoke")(device_revoke)
