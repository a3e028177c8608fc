"""FHIR's result parameters: `_sort`, `_summary`, `_elements`, `_total`, `_include` and
`_revinclude`, parsed once for every search, and the subsetting of resources they ask for.

Bad values of these are refused (400) even under lenient handling: lenient handling is for
parameters the server does not know; a known one used wrongly would silently answer a
different question (an ignored `_sort` reorders, an ignored `_include` leaves data out).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from medmesh.domain.errors import InvalidSearch
from medmesh.fhir.search import Paging, parse_paging, single

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}

# What each type may _include: "Type:param" → the type it points to.
INCLUDES: dict[str, dict[str, str]] = {
    "Observation": {
        "Observation:patient": "Patient",
        "Observation:subject": "Patient",
        "Observation:device": "Device",
    },
    "Device": {"Device:patient": "Patient"},
    "Flag": {"Flag:patient": "Patient"},
}
# What may be _revincluded with each type: "Type:param" of the resources pointing at it.
REVINCLUDES: dict[str, dict[str, str]] = {
    "Patient": {
        "Observation:patient": "Patient",
        "Observation:subject": "Patient",
        "Device:patient": "Patient",
        "Flag:patient": "Patient",
    },
    "Device": {"Observation:device": "Device"},
}

# Elements R4 marks as summary (Σ), of what medmesh renders; `id` and `meta` always stay.
_SUMMARY: dict[str, frozenset[str]] = {
    "Observation": frozenset(
        {"status", "category", "code", "subject", "effectiveDateTime", "issued", "valueQuantity"}
        | {"component"}
    ),
    "Patient": frozenset({"identifier", "name", "gender", "birthDate"}),
    "Device": frozenset({"identifier", "status", "patient"}),
    "Flag": frozenset({"status", "category", "code", "subject", "period", "author"}),
}
# Elements FHIR requires (min 1), returned whatever _elements asks for.
_MANDATORY: dict[str, frozenset[str]] = {
    "Observation": frozenset({"status", "code"}),
    "Flag": frozenset({"status", "code", "subject"}),
}


class Summary(StrEnum):
    FALSE = "false"
    TRUE = "true"
    DATA = "data"
    COUNT = "count"


@dataclass(frozen=True, slots=True)
class ResultControls:
    paging: Paging
    sort: tuple[tuple[str, bool], ...]  # (search key, descending)
    summary: Summary
    elements: frozenset[str] | None
    total: bool
    includes: tuple[str, ...]  # "Type:param" keys of INCLUDES[type]
    revincludes: tuple[str, ...]  # keys of REVINCLUDES[type]

    @property
    def wants_entries(self) -> bool:
        return self.summary is not Summary.COUNT and self.paging.count > 0


def _sort(value: str | None, keys: Mapping[str, str]) -> tuple[tuple[str, bool], ...]:
    if value is None:
        return ()
    found: list[tuple[str, bool]] = []
    for raw in value.split(","):
        name = raw.strip()
        descending = name.startswith("-")
        key = name.removeprefix("-")
        if key not in keys:
            raise InvalidSearch(
                f"_sort: unknown key {key[:40]!r}; supported: {', '.join(sorted(keys))}"
            )
        found.append((keys[key], descending))
    return tuple(found)


def _references(
    params: dict[str, list[str]], name: str, allowed: Mapping[str, str]
) -> tuple[str, ...]:
    found: list[str] = []
    for value in params.get(name, []):
        if value == "*":
            found.extend(allowed)
            continue
        source, _, rest = value.partition(":")
        param, _, target = rest.partition(":")
        key = f"{source}:{param}"
        if key not in allowed or (target and target != allowed[key]):
            supported = ", ".join(allowed) or "none"
            raise InvalidSearch(
                f"{name}: {value[:60]!r} is not supported here; supported: {supported}"
            )
        found.append(key)
    return tuple(dict.fromkeys(found))


def parse_controls(
    params: dict[str, list[str]], resource_type: str, sort_keys: Mapping[str, str]
) -> ResultControls:
    """The result parameters of a search of `resource_type`; `sort_keys`: its `_sort` keys,
    each mapped to what the store sorts by."""
    summary_text = single(params, "_summary") or "false"
    try:
        summary = Summary(summary_text)
    except ValueError:
        raise InvalidSearch(
            "_summary must be count, true, data or false (text is not supported)"
        ) from None
    elements_text = single(params, "_elements")
    elements = (
        frozenset(e.strip() for e in elements_text.split(",") if e.strip())
        if elements_text
        else None
    )
    total_text = single(params, "_total") or "accurate"
    if total_text not in ("none", "estimate", "accurate"):
        raise InvalidSearch("_total must be none, estimate or accurate")
    return ResultControls(
        paging=parse_paging(params),
        sort=_sort(single(params, "_sort"), sort_keys),
        summary=summary,
        elements=elements,
        total=total_text != "none" or summary is Summary.COUNT,
        includes=_references(params, "_include", INCLUDES.get(resource_type, {})),
        revincludes=_references(params, "_revinclude", REVINCLUDES.get(resource_type, {})),
    )


def _chosen(key: str, wanted: frozenset[str]) -> bool:
    """Whether element `key` is asked for: by name, or as a choice type (`value` for
    `valueQuantity`)."""
    if key in wanted:
        return True
    return any(key.startswith(w) and key[len(w) : len(w) + 1].isupper() for w in wanted)


def shaped(resource: dict[str, Any], controls: ResultControls) -> dict[str, Any]:
    """The resource as `_summary` / `_elements` ask, marked SUBSETTED when anything was left
    out (FHIR requires the tag so a client never takes a part for the whole)."""
    kind = resource["resourceType"]
    if controls.elements is not None:
        wanted = controls.elements | _MANDATORY.get(kind, frozenset())
    elif controls.summary is Summary.TRUE:
        wanted = _SUMMARY.get(kind, frozenset())
    else:
        # `data` leaves out the narrative, which medmesh does not render.
        return resource
    kept = {"resourceType": kind, "id": resource["id"]}
    kept.update(
        (k, v)
        for k, v in resource.items()
        if k not in ("resourceType", "id", "meta") and _chosen(k, wanted)
    )
    meta = dict(resource.get("meta", {}))
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    kept["meta"] = meta
    return kept
