"""Who is calling: a device writing its readings, or a person or system using the API."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from medmesh.access.policy.scopes import Scopes

DEFAULT_ORGANIZATION = "default"


class Role(StrEnum):
    PATIENT = "patient"
    CLINICIAN = "clinician"
    ORG_ADMIN = "org-admin"  # manages accounts, care teams and erasure; reads no health data
    SYSTEM = "system"  # a backend service (SMART Backend Services client or service token)
    CAREGIVER = "caregiver"  # named by a patient; reads what their consent grants, writes nothing


class ActorKind(StrEnum):
    USER = "user"  # a person's account (web session or a token issued to it)
    CLIENT = "client"  # an OAuth client authenticated with private_key_jwt
    DEVICE = "device"
    CLI = "cli"  # an operator at the command line of a server


@dataclass(frozen=True, slots=True)
class Principal:
    """A person or system the platform has authenticated, with what their credential allows.

    `id` is the user id or client id; `token_id` the bearer token used, if any (exports belong
    to it). `patient_id` is set for patient accounts (their own record) and SMART patient
    launch context. `purpose` is the v3 PurposeOfUse the access is for (TREAT by default).
    """

    kind: ActorKind
    id: str
    name: str
    role: Role
    organization_id: str
    scopes: Scopes
    patient_id: str | None = None
    token_id: str | None = None
    purpose: str = "TREAT"
    source: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class DevicePrincipal:
    device_id: str
