"""The authentication and authorization checks of the HTTP API, kept in one place.

Every route that touches health data gets its `Principal` from `require_principal` and asks
`authorize` (one patient) or `authorized_patients` (a search across patients). Both apply
`access.policy` and write what was decided to the audit log, permitted or not.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Request

from medmesh.access.audit.audit_writer import AuditWriter
from medmesh.access.audit.entries import AuditEntry
from medmesh.access.identity.bearer import principal_for_token
from medmesh.access.identity.credentials import hash_secret
from medmesh.access.identity.device_certificates import (
    CLIENT_CERT_HEADER,
    CertificateRefused,
    DeviceTrust,
    forwarded_pem,
)
from medmesh.access.identity.device_credentials import KnownDeviceCredentials
from medmesh.access.identity.principals import DevicePrincipal, Principal, Role
from medmesh.access.policy import decision as policy
from medmesh.access.policy.decision import Decision
from medmesh.access.policy.scopes import Interaction
from medmesh.domain.errors import Forbidden, NotFound, Unauthenticated
from medmesh.http.answer_holds import hold_answer
from medmesh.http.deps import database_of, provided, provided_or_none
from medmesh.http.forwarded import ProxyList, connected_from
from medmesh.store.registry import Devices

# FHIR AuditEvent.action of each interaction.
_ACTION = {
    Interaction.CREATE: "C",
    Interaction.READ: "R",
    Interaction.UPDATE: "U",
    Interaction.DELETE: "D",
    Interaction.SEARCH: "E",
}


# Ids medmesh gives out (UUIDs, and FHIR ids generally) are short and plain; anything else
# names no record, and would not fit an audit record either.
_PLAIN_ID = re.compile(r"[A-Za-z0-9\-.]{1,36}")
_PLAIN_REFERENCE = re.compile(r"[A-Za-z0-9\-./:]{1,100}")


def _plain(value: str | None, pattern: re.Pattern[str]) -> str | None:
    return value if value is not None and pattern.fullmatch(value) else None


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("a bearer token is required")
    return token.strip()


def _source(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


# Provided by the composition root.
device_trust_of = provided(DeviceTrust)
proxies_of = provided(ProxyList)


async def require_device(request: Request) -> DevicePrincipal:
    """The device whose secret is in the Authorization header or, without one, whose client
    certificate a trusted reverse proxy forwards (docs/device-certificates.md)."""
    if not request.headers.get("authorization"):
        forwarded = request.headers.get(CLIENT_CERT_HEADER)
        # Believed only from a trusted proxy; from anyone else the header is ignored.
        if forwarded and proxies_of(request).trusts(connected_from(request)):
            return await _device_by_certificate(request, forwarded)
    secret_hash = hash_secret(_bearer(request))
    async with database_of(request).read() as conn:
        device = await Devices(conn).find_by_secret_hash(secret_hash)
    if device is None:
        raise Unauthenticated("the device credential is not valid")
    return DevicePrincipal(device.id)


@dataclass(frozen=True, slots=True)
class IngestingDevice:
    """A device sending readings, and the hash of the credential it sent: the ingest pipeline
    checks that credential again where it stores the readings."""

    principal: DevicePrincipal
    # None for a device known by its client certificate, checked in full on every request.
    secret_hash: str | None


_known_credentials = provided_or_none(KnownDeviceCredentials)


async def require_ingesting_device(request: Request) -> IngestingDevice:
    """The device whose secret is in the Authorization header, from the process's known
    credentials when it is there (access/identity/device_credentials.py): for routes whose
    writes check the credential again in their own transaction, and only for them. Without an
    Authorization header, the device of a forwarded client certificate (`require_device`)."""
    if not request.headers.get("authorization"):
        return IngestingDevice(await require_device(request), None)
    secret_hash = hash_secret(_bearer(request))
    known = _known_credentials(request)
    device_id = None if known is None else known.device_of(secret_hash)
    if device_id is None:
        device_id = (await require_device(request)).device_id
        if known is not None:
            known.remember(secret_hash, device_id)
    return IngestingDevice(DevicePrincipal(device_id), secret_hash)


def forget_device_credential(request: Request, device: IngestingDevice) -> None:
    """The credential was found no longer valid where it was checked again."""
    known = _known_credentials(request)
    if known is not None and device.secret_hash is not None:
        known.forget(device.secret_hash)


async def _device_by_certificate(request: Request, forwarded: str) -> DevicePrincipal:
    async with database_of(request).read() as conn:
        try:
            device_id = await device_trust_of(request).device_for_pem(
                conn, forwarded_pem(forwarded), now=datetime.now(UTC)
            )
        except CertificateRefused as refused:
            raise Unauthenticated(str(refused)) from None
    return DevicePrincipal(device_id)


async def require_principal(request: Request) -> Principal:
    """The person or system whose bearer token is in the Authorization header."""
    token = _bearer(request)
    async with database_of(request).read() as conn:
        principal = await principal_for_token(conn, token, now=datetime.now(UTC))
    if principal is None:
        raise Unauthenticated("the bearer token is not valid (unknown, expired or revoked)")
    return principal


def _entry(
    request: Request,
    principal: Principal,
    decision: Decision,
    *,
    patient_id: str | None,
    resource_type: str,
    interaction: Interaction,
    subtype: str,
    resource_id: str | None,
) -> AuditEntry:
    return AuditEntry(
        action=_ACTION[interaction],
        subtype=subtype,
        outcome="0" if decision.permitted else "4",
        actor_kind=principal.kind.value,
        actor_id=principal.id,
        actor_name=principal.name,
        organization_id=principal.organization_id,
        resource_type=resource_type,
        resource_id=_plain(resource_id, _PLAIN_REFERENCE),
        patient_id=_plain(patient_id, _PLAIN_ID),
        purpose=decision.purpose,
        basis=decision.basis,
        source=_source(request),
    )


# The process's audit writer (group commit), provided by the composition root.
audit_writer_of = provided(AuditWriter)


async def audit(request: Request, entries: Iterable[AuditEntry]) -> None:
    """Append to the audit log; returns once committed (the answer waits for its record)."""
    writer = audit_writer_of(request)
    await asyncio.gather(*(writer.record(entry) for entry in entries))


async def authorize(
    request: Request,
    principal: Principal,
    *,
    patient_id: str,
    resource_type: str,
    interaction: Interaction,
    subtype: str,
    resource_id: str | None = None,
    hide: bool = False,
    audit_beside_work: bool = False,
) -> Decision:
    """Decide and audit one access to one patient's record; refuse by raising.

    `hide`: answer a refusal as "not found", for reads by id, so a caller cannot learn that a
    resource exists in a record they may not see.
    `audit_beside_work`: for routes whose one effect is their answer (a search): a permitted
    access's record is written while the route works, and the answer waits for it
    (http/answer_holds.py). Otherwise the record is durable before the route goes on, so that
    nothing changes unrecorded when the audit log cannot be written.
    """
    if _plain(patient_id, _PLAIN_ID) is None:  # no record has such an id
        if hide:
            raise NotFound(f"this {resource_type} is not known")
        raise Forbidden("you may not see this patient's record")
    async with database_of(request).read() as conn:
        decision = await policy.decide(
            conn, principal, patient_id, resource_type, interaction, now=datetime.now(UTC)
        )
    recorded = audit(
        request,
        [
            _entry(
                request,
                principal,
                decision,
                patient_id=patient_id,
                resource_type=resource_type,
                interaction=interaction,
                subtype=subtype,
                resource_id=resource_id,
            )
        ],
    )
    if decision.permitted and audit_beside_work:
        await hold_answer(request, recorded)
        return decision
    await recorded
    if decision.permitted:
        return decision
    if hide:
        raise NotFound(f"{resource_type}/{resource_id} is not known")
    if decision.basis == policy.Refusal.INSUFFICIENT_SCOPE.value:
        raise Forbidden(f"the token's scopes do not allow {subtype} of {resource_type}")
    raise Forbidden("you may not see this patient's record")


async def authorized_patients(
    request: Request, principal: Principal, *, resource_type: str, interaction: Interaction
) -> dict[str, Decision]:
    """The patients a search by this principal may cover (no audit yet: audit what the search
    returned with `audit_results`)."""
    if not principal.scopes.allows(resource_type, interaction):
        await audit(
            request,
            [
                _entry(
                    request,
                    principal,
                    Decision(False, policy.Refusal.INSUFFICIENT_SCOPE.value, principal.purpose),
                    patient_id=None,
                    resource_type=resource_type,
                    interaction=interaction,
                    subtype="search",
                    resource_id=None,
                )
            ],
        )
        raise Forbidden(f"the token's scopes do not allow search of {resource_type}")
    async with database_of(request).read() as conn:
        return await policy.visible_patients(
            conn, principal, resource_type, interaction, now=datetime.now(UTC)
        )


async def audit_results(
    request: Request,
    principal: Principal,
    decisions: Mapping[str, Decision],
    patient_ids: Iterable[str],
    *,
    resource_type: str,
    interaction: Interaction = Interaction.SEARCH,
    subtype: str = "search",
) -> None:
    """One audit record per patient whose data a search (or export) returned."""
    await audit(
        request,
        [
            _entry(
                request,
                principal,
                decisions[patient_id],
                patient_id=patient_id,
                resource_type=resource_type,
                interaction=interaction,
                subtype=subtype,
                resource_id=None,
            )
            for patient_id in sorted(set(patient_ids))
            if patient_id in decisions
        ],
    )


def require_role(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles:
        raise Forbidden(f"this needs the role {' or '.join(r.value for r in roles)}")


async def search_scope(
    request: Request,
    principal: Principal,
    patient_id: str | None,
    *,
    resource_type: str,
    interaction: Interaction = Interaction.SEARCH,
    audit_beside_work: bool = False,
) -> dict[str, Decision]:
    """The patients a search may cover: the one it names (decided and audited, refused by
    raising), or every patient the principal may see when it names none.
    `audit_beside_work`: as for `authorize`."""
    if patient_id is not None:
        decision = await authorize(
            request,
            principal,
            patient_id=patient_id,
            resource_type=resource_type,
            interaction=interaction,
            subtype="search" if interaction is Interaction.SEARCH else "read",
            audit_beside_work=audit_beside_work,
        )
        return {patient_id: decision}
    return await authorized_patients(
        request, principal, resource_type=resource_type, interaction=interaction
    )


async def record(
    request: Request,
    principal: Principal,
    *,
    interaction: Interaction,
    permitted: bool,
    patient_id: str | None,
    resource_type: str,
    subtype: str,
    basis: str,
    resource_id: str | None = None,
    purpose: str | None = None,
) -> None:
    """Audit an access decided outside `policy.decide` (consent management, break-glass…)."""
    decision = Decision(permitted, basis, purpose or principal.purpose)
    await audit(
        request,
        [
            _entry(
                request,
                principal,
                decision,
                patient_id=patient_id,
                resource_type=resource_type,
                interaction=interaction,
                subtype=subtype,
                resource_id=resource_id,
            )
        ],
    )
