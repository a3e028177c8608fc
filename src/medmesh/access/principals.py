"""Who is calling: a device writing its readings, or a person or system reading the API."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    CLINICIAN = "clinician"


@dataclass(frozen=True, slots=True)
class ApiPrincipal:
    token_id: str
    name: str
    role: Role


@dataclass(frozen=True, slots=True)
class DevicePrincipal:
    device_id: str
