"""Which device a client certificate is: issued by the device CA, valid now, recorded as issued
to that device and not revoked (docs/device-certificates.md). Used by HTTP ingest (certificate
forwarded by a trusted proxy) and the MLLP listener (TLS peer certificate)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote

from cryptography import x509
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.crypto import device_ca
from medmesh.crypto.device_ca import CertificateRefused, DeviceCA
from medmesh.store.device_certificates import DeviceCertificates

# The header a reverse proxy forwards the client certificate in: PEM, URL-escaped as nginx's
# $ssl_client_escaped_cert is (a plain PEM is taken too).
CLIENT_CERT_HEADER = "x-client-cert"

__all__ = ["CLIENT_CERT_HEADER", "CertificateRefused", "DeviceTrust", "forwarded_pem"]


def forwarded_pem(header: str) -> bytes:
    """The PEM in a forwarded-certificate header value."""
    return unquote(header.strip()).encode("ascii", "replace")


@dataclass
class DeviceTrust:
    """The device CA's certificate, read from `ca_dir` when first needed (and again when the
    file changes), and the check of a device's certificate against it and the records."""

    ca_dir: Path
    _ca: DeviceCA | None = field(default=None, init=False)
    _stamp: float = field(default=-1.0, init=False)

    def ca(self) -> DeviceCA:
        path = self.ca_dir / device_ca.CA_CERT
        try:
            stamp = path.stat().st_mtime
        except FileNotFoundError:
            raise CertificateRefused("no device CA is configured on this server") from None
        if self._ca is None or stamp != self._stamp:
            self._ca, self._stamp = device_ca.load_ca(self.ca_dir), stamp
        return self._ca

    async def device_for_pem(self, conn: AsyncConnection, pem: bytes, *, now: datetime) -> str:
        """The device id a PEM certificate proves; CertificateRefused says why not."""
        device_id, serial = device_ca.verified_device_id(self.ca(), pem, now=now)
        return await self._recorded(conn, device_id, serial)

    async def device_for_der(self, conn: AsyncConnection, der: bytes, *, now: datetime) -> str:
        """As `device_for_pem`, for a certificate in DER (what a TLS socket hands over)."""
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError:
            raise CertificateRefused("the client certificate cannot be read") from None
        device_id, serial = device_ca.verified_certificate(self.ca(), certificate, now=now)
        return await self._recorded(conn, device_id, serial)

    async def _recorded(self, conn: AsyncConnection, device_id: str, serial: str) -> str:
        record = await DeviceCertificates(conn).get(serial)
        if record is None or record.device_id != device_id:
            raise CertificateRefused("the client certificate is not one medmesh issued")
        if record.revoked_at is not None:
            raise CertificateRefused("the client certificate is revoked")
        return device_id
