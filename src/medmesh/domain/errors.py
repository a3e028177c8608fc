"""The error types of medmesh. Each edge (HTTP, MQTT, HL7) maps them to its own answer once.

Messages never carry health data: they name what was wrong, not the value that was sent.
"""

from __future__ import annotations

from enum import StrEnum


class MedmeshError(Exception):
    """Base of every error medmesh raises on purpose."""


class RejectReason(StrEnum):
    """Why a reading was refused; stored with its dead letter and returned to the device."""

    MALFORMED = "malformed"
    UNKNOWN_CODE = "unknown-code"
    UNIT_NOT_CONVERTIBLE = "unit-not-convertible"
    IMPLAUSIBLE_VALUE = "implausible-value"
    FUTURE_TIMESTAMP = "future-timestamp"
    NO_PATIENT = "no-patient-assigned"
    BEFORE_REASSIGNMENT = "before-reassignment"
    MALFORMED_BODY = "malformed-body"
    UNKNOWN_DEVICE = "unknown-device"
    DEVICE_MISMATCH = "device-mismatch"
    UNKNOWN_TOPIC = "unknown-topic"
    UNKNOWN_FORMAT = "unknown-format"
    STORAGE_ERROR = "storage-error"
    # Signed readings (docs/signed-payloads.md)
    SIGNATURE_REQUIRED = "signature-required"
    SIGNATURE_MALFORMED = "signature-malformed"
    SIGNATURE_KEY_UNKNOWN = "signature-key-unknown"
    SIGNATURE_INVALID = "signature-invalid"
    SIGNATURE_REPLAYED = "signature-replayed"
    SIGNATURE_STALE = "signature-stale"
    SIGNATURE_FUTURE = "signature-from-future"


class InvalidReading(MedmeshError):
    """A reading that cannot be stored; `reason` is machine-readable, the message is for people."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class UnitNotConvertible(MedmeshError):
    """A unit that has no conversion to the measurement's canonical UCUM unit."""


class Unauthenticated(MedmeshError):
    """No credentials, or credentials that match nothing."""


class SignatureRefused(Unauthenticated):
    """A signed reading whose signature is missing, wrong, replayed or out of time (HTTP 401,
    MQTT dead letter); `reason` is machine-readable and starts the message."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


class Forbidden(MedmeshError):
    """Valid credentials that do not allow this request."""


class NotFound(MedmeshError):
    """A resource that does not exist (or that the caller may not know exists)."""


class Conflict(MedmeshError):
    """A write that contradicts stored state, e.g. an overlapping device assignment."""


class InvalidSearch(MedmeshError):
    """A search parameter the API cannot honour; the message names the parameter."""


class UnsupportedMediaType(MedmeshError):
    """A request body in a media type the route does not read (HTTP 415)."""


class PayloadTooLarge(MedmeshError):
    """A request or message larger than the configured limit."""


class InvalidRequest(MedmeshError):
    """A request whose content cannot be accepted (an empty message, a past slot…); the
    message says what to change."""


class UnsupportedContent(MedmeshError):
    """Uploaded content of a type medmesh refuses (judged from its bytes, not its name)."""
