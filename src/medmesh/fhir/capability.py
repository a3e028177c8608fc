"""The CapabilityStatement served at /fhir/metadata: what this server really supports."""

from __future__ import annotations

from typing import Any

import medmesh
from medmesh.fhir import search_params
from medmesh.fhir.encounters import CHARGE_ITEM_PARAMS, ENCOUNTER_PARAMS, VISIT_NOTE
from medmesh.fhir.resources import US_CORE_PATIENT, observation_profiles
from medmesh.fhir.search_results import INCLUDES, REVINCLUDES


def _search_params(resource_type: str) -> list[dict[str, str]]:
    """What the type's search accepts: the same declaration the router refuses others by."""
    return [param.statement() for param in search_params.BY_TYPE[resource_type]]


# SMART App Launch: the security extension naming the OAuth endpoints, and the service code.
_OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
_SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"


def _references(resource_type: str) -> dict[str, list[str]]:
    """searchInclude / searchRevInclude: what _include and _revinclude accept for the type."""
    found: dict[str, list[str]] = {}
    if resource_type in INCLUDES:
        found["searchInclude"] = list(INCLUDES[resource_type])
    if resource_type in REVINCLUDES:
        found["searchRevInclude"] = list(REVINCLUDES[resource_type])
    return found


_LASTN = "http://hl7.org/fhir/OperationDefinition/Observation-lastn"
_EVERYTHING = "http://hl7.org/fhir/OperationDefinition/Patient-everything"
_BULK = "http://hl7.org/fhir/uv/bulkdata"
_PATIENT_EXPORT = f"{_BULK}/OperationDefinition/patient-export"
_GROUP_EXPORT = f"{_BULK}/OperationDefinition/group-export"


def _security(token_endpoint: str) -> dict[str, Any]:
    return {
        "extension": [
            {
                "url": _OAUTH_URIS,
                "extension": [
                    {"url": "token", "valueUri": token_endpoint},
                    {"url": "authorize", "valueUri": token_endpoint[: -len("token")] + "authorize"},
                ],
            }
        ],
        "service": [{"coding": [{"system": _SECURITY_SERVICE, "code": "SMART-on-FHIR"}]}],
        "description": "OAuth 2.0 bearer tokens with SMART scopes: SMART App Launch "
        "(authorization code with PKCE), SMART Backend Services (client credentials, "
        "private_key_jwt; see .well-known/smart-configuration) or a token issued by an "
        "operator (medmesh token create)",
    }


def capability_statement(base_url: str, published: str, token_endpoint: str) -> dict[str, Any]:
    read_search = [{"code": "read"}, {"code": "search-type"}]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": published,
        "kind": "instance",
        "software": {"name": "medmesh", "version": medmesh.__version__},
        "implementation": {"description": "medmesh FHIR API", "url": base_url},
        "fhirVersion": "4.0.1",
        "instantiates": [f"{_BULK}/CapabilityStatement/bulk-data"],
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "security": _security(token_endpoint),
                # Bundles of Observations from device gateways (docs/fhir-api.md, "Writing").
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
                "resource": [
                    {
                        "type": "Patient",
                        "documentation": "meets the US Core Patient searches (_id, identifier, "
                        "name; birthdate+name, gender+name, birthdate+family, family+gender); "
                        "a Patient with a gender conforms to US Core Patient",
                        "supportedProfile": [US_CORE_PATIENT],
                        "interaction": read_search,
                        "searchParam": _search_params("Patient"),
                        **_references("Patient"),
                        "operation": [
                            {
                                "name": "everything",
                                "definition": _EVERYTHING,
                                "documentation": "the whole record, paged (docs/export.md)",
                            },
                            {
                                "name": "export",
                                "definition": _PATIENT_EXPORT,
                                "documentation": "Bulk Data export, async NDJSON",
                            },
                        ],
                    },
                    {
                        "type": "Group",
                        "documentation": "Group/<organisation id>: its patients; "
                        "Group/care-team-<user id>: a clinician's care-team panel, for them "
                        "and their organisation's admins and services; members listed only "
                        "as far as the caller may see them",
                        "interaction": [{"code": "read"}],
                        "operation": [
                            {
                                "name": "export",
                                "definition": _GROUP_EXPORT,
                                "documentation": "Bulk Data export of the members",
                            }
                        ],
                    },
                    {
                        "type": "Device",
                        "interaction": read_search,
                        "searchParam": _search_params("Device"),
                        **_references("Device"),
                    },
                    {
                        "type": "Observation",
                        "documentation": "meets the US Core Vital Signs searches (patient+"
                        "category, patient+code, patient+category+date, patient+code+date, "
                        "patient+category+status, patient+category+_lastUpdated); heart rate, "
                        "respiratory rate, SpO2, body temperature, blood pressure and body "
                        "weight conform to the FHIR and US Core vital-signs profiles",
                        "supportedProfile": observation_profiles(),
                        # create: devices only, idempotent by identifier (docs/fhir-api.md)
                        "interaction": [*read_search, {"code": "create"}],
                        "conditionalCreate": True,
                        "searchParam": _search_params("Observation"),
                        **_references("Observation"),
                        "operation": [
                            {
                                "name": "lastn",
                                "definition": _LASTN,
                                "documentation": "the newest max (default 1) readings of each "
                                "code, per patient; the Observation search parameters but "
                                "value-quantity, component-code, combo-code, _id",
                            }
                        ],
                    },
                    {
                        "type": "Flag",
                        "documentation": "alerts raised by medmesh rules (docs/alerts.md): "
                        "active while open or acknowledged, inactive once resolved",
                        "interaction": read_search,
                        "searchParam": _search_params("Flag"),
                        **_references("Flag"),
                    },
                    {
                        "type": "Communication",
                        "documentation": "secure messages between a patient and their care "
                        "team, one per message; identifier: the thread; written through "
                        "POST /api/v1/threads (docs/care.md)",
                        "interaction": read_search,
                        "searchParam": _search_params("Communication"),
                    },
                    {
                        "type": "ImagingStudy",
                        "documentation": "DICOM studies from modalities (C-STORE, STOW-RS), "
                        "with a contained Endpoint to this server's DICOMweb base; the pixels "
                        "are read there (docs/imaging.md)",
                        "interaction": read_search,
                        "searchParam": _search_params("ImagingStudy"),
                    },
                    {
                        "type": "MedicationRequest",
                        "documentation": "a patient's medications, kept by their care team; an "
                        "approved refill is a new one whose priorPrescription it renews "
                        "(docs/care.md)",
                        "interaction": read_search,
                        "searchParam": _search_params("MedicationRequest"),
                    },
                    {
                        "type": "Appointment",
                        "documentation": "visits booked in a clinician's Slot, in person or "
                        "video; booked through POST /api/v1/appointments (docs/care.md)",
                        "interaction": read_search,
                        "searchParam": _search_params("Appointment"),
                    },
                    {
                        "type": "Encounter",
                        "documentation": "video visits; the clinician's note is the extension "
                        f"{VISIT_NOTE} (docs/visits.md)",
                        "interaction": read_search,
                        "searchParam": [p.statement() for p in ENCOUNTER_PARAMS],
                    },
                    {
                        "type": "ChargeItem",
                        "documentation": "clinician time on a patient's care, in minutes, for "
                        "billing remote monitoring (docs/rpm-report.md)",
                        "interaction": read_search,
                        "searchParam": [p.statement() for p in CHARGE_ITEM_PARAMS],
                    },
                    {
                        "type": "Schedule",
                        "documentation": "a clinician's published availability",
                        "interaction": read_search,
                        "searchParam": _search_params("Schedule"),
                    },
                    {
                        "type": "Slot",
                        "documentation": "computed from the Schedule: free or busy",
                        "interaction": read_search,
                        "searchParam": _search_params("Slot"),
                    },
                    {
                        "type": "Consent",
                        "documentation": "a patient's permission to share their record beyond "
                        "the care team (scope patient-privacy, provision.type permit, one "
                        "provision.actor: Practitioner/<user id> or Organization/<id>; "
                        "provision.code: data categories; provision.purpose: v3 ActReason); "
                        "managed by the patient or their organisation's admin; DELETE revokes "
                        "it (status inactive) with effect on the next request (docs/access.md)",
                        "interaction": [
                            {"code": "create"},
                            {"code": "read"},
                            {"code": "search-type"},
                            {"code": "delete"},
                        ],
                        "searchParam": _search_params("Consent"),
                    },
                    {
                        "type": "AuditEvent",
                        "documentation": "the hash-chained audit log (docs/audit.md), newest "
                        "first; each event carries its record's seq and chain hash",
                        "interaction": read_search,
                        "searchParam": _search_params("AuditEvent"),
                    },
                    {
                        "type": "Subscription",
                        "documentation": "rest-hook channels only (https, or http to loopback "
                        "for development); criteria Observation?patient=<id> with an optional "
                        "&code=<system|code>, Flag?patient=<id>, Flag, "
                        "MedicationRequest?patient=<id>, MedicationRequest, "
                        "Communication?patient=<id> or Communication (care notifications name "
                        "resources by id only; docs/care.md); notifications signed "
                        "with HMAC-SHA256 (X-Medmesh-Signature; see docs/webhooks.md)",
                        "interaction": [
                            {"code": "create"},
                            {"code": "read"},
                            {"code": "search-type"},
                            {"code": "delete"},
                        ],
                        "searchParam": _search_params("Subscription"),
                    },
                ],
            }
        ],
    }
