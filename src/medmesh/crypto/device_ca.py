"""The device CA: a small X.509 authority whose client certificates name one device each
(subject CN = device id), its certificate revocation list, and the check of a certificate a
device presents (docs/device-certificates.md). Files and records are the caller's business."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY, CRL = "ca.crt", "ca.key", "crl.pem"
CA_YEARS = 10
CRL_DAYS = 7  # a CRL's nextUpdate; `medmesh device revoke` and `medmesh ca crl` write a new one
_BACKDATE = timedelta(minutes=5)  # tolerate devices whose clock is a little behind


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


class CertificateRefused(ValueError):
    """A certificate that does not identify a device: the reason is safe to show the sender."""


@dataclass(frozen=True, slots=True)
class DeviceCA:
    """The CA's certificate and, when loaded to issue, its private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey | None = None

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    device_id: str
    serial: str  # hex, lower case, as openssl prints it without colons
    not_before: datetime
    not_after: datetime
    certificate_pem: bytes
    key_pem: bytes | None  # None when the device sent a CSR: its key never left it


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def create_ca(directory: Path, name: str = "medmesh device CA") -> DeviceCA:
    """A new CA in `directory`: `ca.key` (mode 0600, EC P-256) and `ca.crt`, and an empty CRL.
    Refuses to overwrite an existing CA (its certificates would all stop verifying)."""
    if (directory / CA_KEY).exists() or (directory / CA_CERT).exists():
        raise FileExistsError(f"a device CA already exists in {directory}")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(directory / CA_KEY, key_pem)
    ca = DeviceCA(certificate, key)
    write_public(directory / CA_CERT, ca.certificate_pem())
    write_public(directory / CRL, make_crl(ca, []))
    return ca


def load_ca(directory: Path, *, with_key: bool = False) -> DeviceCA:
    """The CA in `directory` (FileNotFoundError names what is missing)."""
    cert_path = directory / CA_CERT
    if not cert_path.exists():
        raise FileNotFoundError(f"no device CA in {directory}: run `medmesh ca init`")
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if not with_key:
        return DeviceCA(certificate)
    key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the device CA key is not an EC key")
    return DeviceCA(certificate, key)


def issue(
    ca: DeviceCA, device_id: str, *, days: int, csr_pem: bytes | None = None
) -> IssuedCertificate:
    """A TLS client certificate for `device_id`, valid `days`; with a CSR, for the CSR's key
    (its signature is checked; its subject is ignored: the CN is always the device id)."""
    assert ca.key is not None, "load the CA with its key to issue"
    if days < 1:
        raise ValueError("a certificate must be valid for at least one day")
    key_pem: bytes | None = None
    if csr_pem is not None:
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError:
            raise ValueError("the CSR is not a PEM certificate signing request") from None
        if not csr.is_signature_valid:
            raise ValueError("the CSR's signature does not verify")
        public_key = csr.public_key()
    else:
        device_key = ec.generate_private_key(ec.SECP256R1())
        public_key = device_key.public_key()
        key_pem = device_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    now = datetime.now(UTC)
    not_before, not_after = now - _BACKDATE, now + timedelta(days=days)
    serial = x509.random_serial_number()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return IssuedCertificate(
        device_id,
        serial_hex(serial),
        not_before,
        not_after,
        certificate.public_bytes(serialization.Encoding.PEM),
        key_pem,
    )


def make_crl(ca: DeviceCA, revoked: list[tuple[str, datetime]]) -> bytes:
    """The CA's CRL (PEM) listing `(serial hex, revoked at)`."""
    assert ca.key is not None, "load the CA with its key to sign a CRL"
    now = datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(now - _BACKDATE)
        .next_update(now + timedelta(days=CRL_DAYS))
    )
    for serial, at in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(int(serial, 16))
            .revocation_date(at)
            .build()
        )
    crl = builder.sign(ca.key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.PEM)


def verified_device_id(ca: DeviceCA, certificate_pem: bytes, *, now: datetime) -> tuple[str, str]:
    """(device id, serial hex) of a client certificate issued by `ca` and valid at `now`;
    CertificateRefused otherwise. Revocation is the caller's check (by serial)."""
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem)
    except ValueError:
        raise CertificateRefused("the client certificate is not a PEM certificate") from None
    return verified_certificate(ca, certificate, now=now)


def verified_certificate(
    ca: DeviceCA, certificate: x509.Certificate, *, now: datetime
) -> tuple[str, str]:
    """As `verified_device_id`, for a parsed certificate."""
    try:
        certificate.verify_directly_issued_by(ca.certificate)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateRefused("the client certificate is not issued by the device CA") from None
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise CertificateRefused("the client certificate is expired or not yet valid")
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str) or not names[0].value:
        raise CertificateRefused("the client certificate names no device (subject CN)")
    return names[0].value, serial_hex(certificate.serial_number)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file created with mode 0600 (never readable by others, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def write_public(path: Path, data: bytes) -> None:
    """Replace a public file atomically, keeping the mode of the one it replaces (0644 new),
    so the broker reading `crlfile` never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
    os.replace(tmp, path)
