"""Which device an MLLP sender's TLS client certificate ties it to (docs/hl7.md#who-may-send).

A certificate from medmesh's device CA is that device's, if recorded as issued to it and not
revoked. A certificate from another CA of MEDMESH_MLLP_CLIENT_CA_FILE whose subject CN is a
registered device id is that device's too. Any other certificate the TLS handshake accepted is
a gateway's (an interface engine sending for many devices), which may send for any serial.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.x509.oid import NameOID

from medmesh.access.identity.device_certificates import CertificateRefused, DeviceTrust
from medmesh.store.database import Database
from medmesh.store.registry import Devices


@dataclass(frozen=True, slots=True)
class Sender:
    device_id: str | None  # None: a gateway, or no client certificate (address rules only)


GATEWAY = Sender(None)


async def certificate_sender(
    tls: ssl.SSLObject | None, database: Database, trust: DeviceTrust | None
) -> Sender:
    """The sender of a connection; CertificateRefused for a device certificate that medmesh
    does not (or no longer) accept."""
    der = tls.getpeercert(binary_form=True) if tls is not None else None
    if not der:
        return GATEWAY
    now = datetime.now(UTC)
    async with database.read() as conn:
        if trust is not None and _issued_by(trust, der):
            return Sender(await trust.device_for_der(conn, der, now=now))
        names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(
            NameOID.COMMON_NAME
        )
        name = str(names[0].value) if len(names) == 1 else ""
        found = await Devices(conn).existing_ids([name]) if name else set()
    return Sender(name) if name in found else GATEWAY


def _issued_by(trust: DeviceTrust, der: bytes) -> bool:
    try:
        ca = trust.ca()
    except CertificateRefused:
        return False  # no device CA on this server
    return x509.load_der_x509_certificate(der).issuer == ca.certificate.subject
