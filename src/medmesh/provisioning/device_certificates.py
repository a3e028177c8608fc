"""Device certificates: issuing a device's client certificate from the device CA, revoking it,
and publishing the CRL where the broker reads it; each step recorded and audited
(docs/device-certificates.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from medmesh.crypto import device_ca
from medmesh.crypto.device_ca import IssuedCertificate
from medmesh.domain.audit import AuditEntry
from medmesh.domain.errors import NotFound
from medmesh.store.audit_log import AuditLog
from medmesh.store.database import Database
from medmesh.store.device_certificates import DeviceCertificate, DeviceCertificates
from medmesh.store.registry import Devices


def _audit(action: str, subtype: str, device_id: str, serial: str) -> AuditEntry:
    return AuditEntry(
        action=action,
        subtype=subtype,
        actor_kind="cli",
        actor_id="cli",
        actor_name="medmesh CLI",
        resource_type="Device",
        resource_id=device_id,
        basis=f"certificate:{serial}",
    )


async def issue_certificate(
    database: Database,
    ca_dir: Path,
    device_id: str,
    *,
    days: int,
    csr_pem: bytes | None = None,
) -> IssuedCertificate:
    """Issue a client certificate for a registered device (NotFound otherwise), record it
    and audit it. Its private key, when made here, is in the result only: write it out once."""
    ca = device_ca.load_ca(ca_dir, with_key=True)
    async with database.read() as conn:
        await Devices(conn).get(device_id)
    issued = device_ca.issue(ca, device_id, days=days, csr_pem=csr_pem)
    async with database.write() as conn:
        await DeviceCertificates(conn).add(
            DeviceCertificate(
                issued.serial, device_id, issued.not_before, issued.not_after, datetime.now(UTC)
            )
        )
        await AuditLog(conn).append(_audit("C", "certificate-issue", device_id, issued.serial))
    return issued


async def revoke_certificates(
    database: Database, ca_dir: Path, device_or_serial: str, crl_file: Path
) -> list[DeviceCertificate]:
    """Revoke one certificate (by serial) or every certificate of a device (by id), audit
    each, and publish the new CRL to `crl_file`. Returns the certificates newly revoked."""
    ca = device_ca.load_ca(ca_dir, with_key=True)
    now = datetime.now(UTC)
    key = device_or_serial.strip().lower().replace(":", "")
    async with database.write() as conn:
        certificates = DeviceCertificates(conn)
        one = await certificates.get(key)
        targets = [one] if one is not None else await certificates.of_device(device_or_serial)
        if not targets:
            raise NotFound(f"no certificate has the serial or device id {device_or_serial[:64]!r}")
        revoked = await certificates.revoke([c.serial for c in targets], now)
        log = AuditLog(conn)
        for target in targets:
            if target.serial in revoked:
                await log.append(_audit("U", "certificate-revoke", target.device_id, target.serial))
    await publish_crl(database, ca, crl_file)
    return [c for c in targets if c.serial in revoked]


async def publish_crl(database: Database, ca: device_ca.DeviceCA, crl_file: Path) -> int:
    """Write the CRL of every revoked certificate not yet expired; returns how many it lists."""
    async with database.read() as conn:
        revoked = await DeviceCertificates(conn).revoked(still_valid_at=datetime.now(UTC))
    listed = [(c.serial, c.revoked_at) for c in revoked if c.revoked_at is not None]
    device_ca.write_public(crl_file, device_ca.make_crl(ca, listed))
    return len(listed)
