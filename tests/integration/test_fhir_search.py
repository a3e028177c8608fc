"""The FHIR searches clients send (issue 10 part 1), through the real app and database on
both backends. Every Bundle, and every resource in it, is validated with fhir.resources (R4B)."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome

from medmesh import provisioning
from medmesh.store.database import Database
from tests.conftest import ASSIGNED_SINCE, World
from tests.helpers import BASE_TIME, reading

INGEST = "/ingest/v1/readings"


def validated(bundle: dict[str, Any]) -> dict[str, Any]:
    Bundle.model_validate(bundle)
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    return bundle


async def _get(
    client: httpx.AsyncClient, world: World, path: str, params: Any, **headers: str
) -> dict[str, Any]:
    response = await client.get(path, params=params, headers={**world.reader_headers, **headers})
    assert response.status_code == 200, response.text
    return validated(response.json())


async def _refused(client: httpx.AsyncClient, world: World, path: str, params: Any) -> str:
    response = await client.get(path, params=params, headers=world.reader_headers)
    assert response.status_code == 400, response.text
    OperationOutcome.model_validate(response.json())
    return str(response.json()["issue"][0]["diagnostics"])


def _ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == mode]


def _resources(bundle: dict[str, Any], mode: str = "match") -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == mode]


def _link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((lk["url"] for lk in bundle["link"] if lk["relation"] == relation), None)


async def _ingest(client: httpx.AsyncClient, world: World, *readings: dict[str, Any]) -> None:
    response = await client.post(
        INGEST, json={"readings": list(readings)}, headers=world.device_headers
    )
    assert response.status_code == 202, response.text
    assert not response.json()["rejected"], response.text


@pytest.fixture
async def vitals(client: httpx.AsyncClient, world: World) -> World:
    """Heart rate at 08:00, 08:10, 08:20 (60, 75, 110), temperature 38.5 °C at 08:05, blood
    pressure 131/84 at 08:15 and a glucose (laboratory) at 08:30, all on the 24th."""
    at = BASE_TIME
    await _ingest(
        client,
        world,
        reading("hr-1", value=60, at=at),
        reading("hr-2", value=75, at=at + timedelta(minutes=10)),
        reading("hr-3", value=110, at=at + timedelta(minutes=20)),
        reading("t-1", "body-temperature", 38.5, "Cel", at + timedelta(minutes=5)),
        reading(
            "bp-1",
            "blood-pressure",
            {"systolic": 131, "diastolic": 84},
            "mm[Hg]",
            at + timedelta(minutes=15),
        ),
        reading("g-1", "blood-glucose", 105, "mg/dL", at + timedelta(minutes=30)),
    )
    return world


OBS = "/fhir/Observation"


async def test_unknown_parameters_are_ignored_and_left_out_of_the_self_link(
    client: httpx.AsyncClient, vitals: World
) -> None:
    bundle = await _get(
        client, vitals, OBS, {"patient": vitals.patient_id, "_totalMethod": "count", "colour": "x"}
    )
    assert len(bundle["entry"]) == 6
    query = parse_qs(urlsplit(_link(bundle, "self") or "").query)
    assert "colour" not in query and "_totalMethod" not in query
    assert query["patient"] == [vitals.patient_id]

    strict = await client.get(
        OBS,
        params={"patient": vitals.patient_id, "colour": "x"},
        headers={**vitals.reader_headers, "Prefer": "handling=strict"},
    )
    assert strict.status_code == 400
    assert "unsupported search parameter(s): colour" in strict.text


async def test_category_code_and_combo_code_pick_the_right_readings(
    client: httpx.AsyncClient, vitals: World
) -> None:
    p = vitals.patient_id
    vital = await _get(client, vitals, OBS, {"patient": p, "category": "vital-signs"})
    assert len(vital["entry"]) == 5  # not the glucose
    lab = await _get(
        client,
        vitals,
        OBS,
        {
            "patient": p,
            "category": "http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
        },
    )
    assert [r["code"]["coding"][0]["code"] for r in _resources(lab)] == ["41653-7"]
    both = await _get(client, vitals, OBS, {"patient": p, "code": "http://loinc.org|8867-4,8310-5"})
    assert len(both["entry"]) == 4
    # Repeated code parameters must all hold: heart rate and temperature at once is nothing.
    neither = await _get(
        client, vitals, OBS, [("patient", p), ("code", "8867-4"), ("code", "8310-5")]
    )
    assert neither["entry"] == [] and neither["total"] == 0
    systolic = await _get(client, vitals, OBS, {"patient": p, "component-code": "8480-6"})
    assert [r["code"]["coding"][0]["code"] for r in _resources(systolic)] == ["85354-9"]
    combo = await _get(client, vitals, OBS, {"patient": p, "combo-code": "8462-4,8310-5"})
    assert sorted(r["code"]["coding"][0]["code"] for r in _resources(combo)) == [
        "8310-5",
        "85354-9",
    ]
    final = await _get(client, vitals, OBS, {"patient": p, "status": "final"})
    assert len(final["entry"]) == 6
    cancelled = await _get(client, vitals, OBS, {"patient": p, "status": "cancelled"})
    assert cancelled["entry"] == []


async def test_every_date_prefix_and_a_range(client: httpx.AsyncClient, vitals: World) -> None:
    p, hr = vitals.patient_id, "8867-4"

    async def times(*dates: str) -> list[str]:
        params = [("patient", p), ("code", hr), *(("date", d) for d in dates)]
        bundle = await _get(client, vitals, OBS, params)
        return [r["effectiveDateTime"][11:16] for r in _resources(bundle)]

    assert await times("2026-11-24T08:10") == ["08:10"]
    assert await times("eq2026-11-24T08:10") == ["08:10"]
    assert await times("ne2026-11-24T08:10") == ["08:00", "08:20"]
    assert await times("gt2026-11-24T08:10") == ["08:20"]
    assert await times("sa2026-11-24T08:10") == ["08:20"]
    assert await times("ge2026-11-24T08:10") == ["08:10", "08:20"]
    assert await times("lt2026-11-24T08:10") == ["08:00"]
    assert await times("eb2026-11-24T08:10") == ["08:00"]
    assert await times("le2026-11-24T08:10") == ["08:00", "08:10"]
    assert await times("ge2026-11-24T08:05", "lt2026-11-24T08:15") == ["08:10"]
    # ap: within 10 % of the distance from now, so a minute's difference is inside it.
    assert await times("ap2026-11-24T08:11") == ["08:00", "08:10", "08:20"]
    assert await times("ap2020-01-01") == []


async def test_value_quantity_compares_decrypted_values_with_prefix_and_unit(
    client: httpx.AsyncClient, vitals: World
) -> None:
    p = vitals.patient_id

    async def values(vq: str, code: str = "8867-4") -> list[float]:
        bundle = await _get(client, vitals, OBS, {"patient": p, "code": code, "value-quantity": vq})
        return [r["valueQuantity"]["value"] for r in _resources(bundle)]

    assert await values("gt100") == [110]
    assert await values("le75") == [60, 75]
    assert await values("75") == [75]
    assert await values("ne75") == [60, 110]
    assert await values("ap70") == [75]  # 63..77
    assert await values("ge100|http://unitsofmeasure.org|/min") == [110]
    # 38.5 °C is 101.3 °F: the asked unit is converted to, then compared.
    assert await values("gt101||[degF]", "8310-5") == [38.5]
    assert await values("lt101||[degF]", "8310-5") == []
    assert await values("gt1||kg", "8310-5") == []  # not convertible: no match
    # A blood-pressure panel has no Observation.value; its components are not matched.
    assert await values("gt0", "85354-9") == []
    counted = await _get(
        client, vitals, OBS, {"patient": p, "value-quantity": "gt70", "_summary": "count"}
    )
    assert counted["total"] == 3  # 75, 110 /min and 105 mg/dL


async def test_id_device_and_last_updated(client: httpx.AsyncClient, vitals: World) -> None:
    p = vitals.patient_id
    everything = await _get(client, vitals, OBS, {"patient": p})
    first, second = _ids(everything)[:2]
    by_id = await _get(client, vitals, OBS, {"_id": f"{first},{second}"})
    assert sorted(_ids(by_id)) == sorted([first, second])
    by_device = await _get(client, vitals, OBS, {"device": f"Device/{vitals.device_id}"})
    assert len(by_device["entry"]) == 6
    other = await _get(client, vitals, OBS, {"device": "Device/another-one"})
    assert other["entry"] == []
    received = await _get(client, vitals, OBS, {"patient": p, "_lastUpdated": "ge2020-01-01"})
    assert len(received["entry"]) == 6
    future = await _get(client, vitals, OBS, {"patient": p, "_lastUpdated": "gt9000"})
    assert future["entry"] == []


async def test_sort_by_several_keys_total_summary_and_elements(
    client: httpx.AsyncClient, vitals: World
) -> None:
    p = vitals.patient_id
    by_code = await _get(client, vitals, OBS, {"patient": p, "_sort": "code,-date"})
    pairs = [(r["code"]["coding"][0]["code"], r["effectiveDateTime"]) for r in _resources(by_code)]
    assert [c for c, _ in pairs] == sorted(c for c, _ in pairs)
    heart = [t for c, t in pairs if c == "8867-4"]
    assert heart == sorted(heart, reverse=True)

    paged = await _get(client, vitals, OBS, {"patient": p, "_count": "2", "_offset": "2"})
    assert paged["total"] == 6 and len(paged["entry"]) == 2
    no_total = await _get(client, vitals, OBS, {"patient": p, "_count": "2", "_total": "none"})
    assert "total" not in no_total
    count = await _get(client, vitals, OBS, {"patient": p, "_summary": "count"})
    assert count["total"] == 6 and count["entry"] == []
    zero = await _get(client, vitals, OBS, {"patient": p, "_count": "0"})
    assert zero["total"] == 6 and zero["entry"] == []

    summary = await _get(client, vitals, OBS, {"patient": p, "_summary": "true"})
    for resource in _resources(summary):
        assert "device" not in resource and "subject" in resource
        assert {"code": "SUBSETTED"}.items() <= resource["meta"]["tag"][0].items()
    data = await _get(client, vitals, OBS, {"patient": p, "_summary": "data"})
    assert all("device" in r for r in _resources(data))
    elements = await _get(
        client, vitals, OBS, {"patient": p, "code": "8867-4", "_elements": "value,subject"}
    )
    for resource in _resources(elements):
        # status and code are mandatory, so they stay whatever _elements asks for.
        assert set(resource) == {
            "resourceType",
            "id",
            "meta",
            "status",
            "code",
            "subject",
            "valueQuantity",
        }


async def test_include_and_revinclude(client: httpx.AsyncClient, vitals: World) -> None:
    p = vitals.patient_id
    bundle = await _get(
        client,
        vitals,
        OBS,
        [("patient", p), ("_include", "Observation:patient"), ("_include", "Observation:device")],
    )
    included = {(r["resourceType"], r["id"]) for r in _resources(bundle, "include")}
    assert included == {("Patient", p), ("Device", vitals.device_id)}
    assert len(_ids(bundle)) == 6  # each referenced resource once, however many point at it

    patients = await _get(
        client,
        vitals,
        "/fhir/Patient",
        [
            ("_id", p),
            ("_revinclude", "Observation:patient"),
            ("_revinclude", "Device:patient"),
            ("_revinclude", "Flag:patient"),
        ],
    )
    kinds = [r["resourceType"] for r in _resources(patients, "include")]
    assert kinds.count("Observation") == 6 and kinds.count("Device") == 1
    devices = await _get(
        client,
        vitals,
        "/fhir/Device",
        [("patient", p), ("_include", "Device:patient"), ("_revinclude", "Observation:device")],
    )
    assert [r["resourceType"] for r in _resources(devices, "include")].count("Observation") == 6
    flags = await _get(client, vitals, "/fhir/Flag", {"patient": p, "_include": "Flag:patient"})
    if flags["entry"]:  # a fever of 38.5 °C may raise an alert; the include follows it
        assert ("Patient", p) in {
            (r["resourceType"], r["id"]) for r in _resources(flags, "include")
        }


async def test_lastn_gives_the_newest_readings_of_each_code(
    client: httpx.AsyncClient, vitals: World
) -> None:
    p = vitals.patient_id
    last = await _get(client, vitals, f"{OBS}/$lastn", {"patient": p, "category": "vital-signs"})
    codes = [r["code"]["coding"][0]["code"] for r in _resources(last)]
    assert sorted(codes) == sorted(["8867-4", "8310-5", "85354-9"])
    hr = next(r for r in _resources(last) if r["code"]["coding"][0]["code"] == "8867-4")
    assert hr["valueQuantity"]["value"] == 110  # the newest of the three
    two = await _get(client, vitals, f"{OBS}/$lastn", {"patient": p, "code": "8867-4", "max": "2"})
    assert [r["valueQuantity"]["value"] for r in _resources(two)] == [110, 75]
    assert two["total"] == 2
    everyone = await _get(client, vitals, f"{OBS}/$lastn", {"code": "8867-4"})
    assert [r["valueQuantity"]["value"] for r in _resources(everyone)] == [110]
    assert "max" in await _refused(client, vitals, f"{OBS}/$lastn", {"max": "0"})


async def test_patient_searches_of_us_core(
    client: httpx.AsyncClient, database: Database, world: World
) -> None:
    other = await provisioning.create_patient(
        database,
        family="Berg",
        given="Anna",
        identifier="MRN-2",
        gender="female",
        birth_date=date(1950, 3, 1),
    )
    await provisioning.add_to_care_team(database, other.id, world.clinician_id, added_by="test")
    path = "/fhir/Patient"

    async def found(params: Any) -> list[str]:
        return _ids(await _get(client, world, path, params))

    assert await found({"_id": other.id}) == [other.id]
    assert await found({"identifier": "urn:medmesh:mrn|MRN-2"}) == [other.id]
    assert await found({"identifier": "MRN-2"}) == [other.id]
    assert await found({"family": "ber"}) == [other.id]
    assert await found({"given": "jan"}) == [world.patient_id]
    assert await found({"name": "Anna"}) == [other.id]
    assert await found({"name": "Berg", "birthdate": "1950-03-01"}) == [other.id]
    assert await found({"birthdate": "ge1950", "gender": "female"}) == [other.id]
    assert await found({"birthdate": "ne1950"}) == []  # the other patient has no birth date
    assert await found({"gender": "male"}) == []
    assert await found({"_sort": "-family"}) == [world.patient_id, other.id]
    assert await found({"_sort": "given"}) == [other.id, world.patient_id]
    shown = await _get(client, world, path, {"_id": other.id})
    profile = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"
    assert _resources(shown)[0]["meta"]["profile"] == [profile]


async def test_device_search_by_identifier_and_patient(
    client: httpx.AsyncClient, database: Database, world: World
) -> None:
    serial = await provisioning.register_device(
        database, display_name="Oximeter", serial_number="SN-42"
    )
    await provisioning.assign_device(database, serial.device_id, world.patient_id, ASSIGNED_SINCE)
    path = "/fhir/Device"
    bundle = await _get(client, world, path, {"identifier": "urn:medmesh:device-serial|SN-42"})
    assert _ids(bundle) == [serial.device_id]
    assert _resources(bundle)[0]["identifier"][0]["value"] == "SN-42"
    assert _ids(await _get(client, world, path, {"identifier": "SN-42"})) == [serial.device_id]
    both = await _get(client, world, path, {"patient": world.patient_id, "_sort": "-device-name"})
    assert _ids(both) == [serial.device_id, world.device_id] and both["total"] == 2


async def test_device_search_by_type(
    client: httpx.AsyncClient, database: Database, world: World
) -> None:
    """Device.type as registered (a bare code is SNOMED CT), and `type=` by system|code, by
    code in any system, and several codes (any)."""
    monitor = await provisioning.register_device(
        database, display_name="Bedside monitor", device_type="706172005"
    )
    cuff = await provisioning.register_device(
        database,
        display_name="Cuff",
        device_type="urn:iso:std:iso:11073:10101|528391",  # MDC_DEV_SPEC_PROFILE_BPM
    )
    for device in (monitor, cuff):
        await provisioning.assign_device(
            database, device.device_id, world.patient_id, ASSIGNED_SINCE
        )
    path = "/fhir/Device"
    snomed = await _get(client, world, path, {"type": "http://snomed.info/sct|706172005"})
    assert _ids(snomed) == [monitor.device_id]
    assert _resources(snomed)[0]["type"] == {
        "coding": [{"system": "http://snomed.info/sct", "code": "706172005"}]
    }
    assert _ids(await _get(client, world, path, {"type": "528391"})) == [cuff.device_id]
    assert _ids(await _get(client, world, path, {"type": "http://snomed.info/sct|528391"})) == []
    either = await _get(client, world, path, {"type": "706172005,528391", "_sort": "device-name"})
    assert _ids(either) == [monitor.device_id, cuff.device_id]
    with pytest.raises(ValueError, match="no spaces"):
        await provisioning.register_device(database, display_name="X", device_type="a b")


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"date": "2026-13-01"}, "date"),
        ({"date": "xx2026-11-24"}, "prefix"),
        ({"_lastUpdated": "yesterday"}, "_lastUpdated"),
        ({"_sort": "colour"}, "_sort"),
        ({"_include": "Observation:performer"}, "_include"),
        ({"_revinclude": "Observation:patient"}, "_revinclude"),
        ({"value-quantity": "lots"}, "value-quantity"),
        ({"value-quantity": "gt1|http://snomed.info/sct|x"}, "UCUM"),
        ({"category": "http://example.org|vital-signs"}, "category"),
        ({"_summary": "text"}, "_summary"),
        ({"_total": "maybe"}, "_total"),
        ({"code:text": "heart"}, "modifier"),
        ({"device": "Patient/x"}, "Device"),
    ],
)
async def test_bad_values_of_known_parameters_are_refused_even_when_lenient(
    client: httpx.AsyncClient, world: World, params: dict[str, str], names: str
) -> None:
    diagnostics = await _refused(client, world, OBS, params)
    assert names in diagnostics


async def _served(client: httpx.AsyncClient) -> set[tuple[str, str]]:
    """The app's FHIR routes, from its own OpenAPI document (every route is in it)."""
    paths = (await client.get("/openapi.json")).json()["paths"]
    return {
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/fhir/")
        for method in operations
    }


def _by_id(path: str, kind: str) -> bool:
    return re.fullmatch(rf"/fhir/{kind}/\{{[a-z_]+\}}", path) is not None


async def test_metadata_says_exactly_what_the_routes_serve(
    client: httpx.AsyncClient, vitals: World
) -> None:
    statement = (await client.get("/fhir/metadata")).json()
    CapabilityStatement.model_validate(statement)
    served = await _served(client)
    assert len(served) > 30
    listed = {r["type"]: r for r in statement["rest"][0]["resource"]}
    for kind, resource in listed.items():
        codes = {i["code"] for i in resource["interaction"]}
        by_id = {m for m, p in served if _by_id(p, kind)}
        assert ("read" in codes) == ("GET" in by_id), kind
        assert ("delete" in codes) == ("DELETE" in by_id), kind
        assert ("search-type" in codes) == (("GET", f"/fhir/{kind}") in served), kind
        assert ("create" in codes) == (("POST", f"/fhir/{kind}") in served), kind
        for operation in resource.get("operation", []):
            assert any(f"${operation['name']}" in p and kind in p for _, p in served), operation
        strict = {**vitals.reader_headers, "Prefer": "handling=strict"}
        for target in resource.get("searchInclude", []):
            response = await client.get(
                f"/fhir/{kind}", params={"_include": target}, headers=strict
            )
            assert response.status_code == 200, (kind, target, response.text)
        for target in resource.get("searchRevInclude", []):
            params = {"_revinclude": target}
            response = await client.get(f"/fhir/{kind}", params=params, headers=strict)
            assert response.status_code == 200, (kind, target, response.text)
    # Every resource route the API has is in the statement.
    for method, path in served:
        kind = path.split("/")[2]
        if method == "GET" and kind[:1].isupper() and "$" not in path:
            assert kind in listed, path
    # The profiles resources claim are the ones the statement lists, and they are US Core's
    # only where the search requirements are met (Patient, the vital signs).
    bundle = await _get(client, vitals, OBS, {"patient": vitals.patient_id})
    claimed = {p for r in _resources(bundle) for p in r.get("meta", {}).get("profile", [])}
    assert claimed and claimed <= set(listed["Observation"]["supportedProfile"])
    assert listed["Patient"]["supportedProfile"] == [
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"
    ]
    us_core = {
        kind
        for kind, r in listed.items()
        for p in r.get("searchParam", [])
        if "us/core" in p.get("definition", "")
    }
    assert us_core == {"Patient", "Observation"}


async def test_date_sorted_pages_follow_a_keyset_cursor_through_ties(
    client: httpx.AsyncClient, world: World
) -> None:
    # Seven readings at one instant and five a minute later: ties are broken by id.
    same = [reading(f"tie-{i}", value=60 + i, at=BASE_TIME) for i in range(7)]
    later = [
        reading(f"next-{i}", value=80 + i, at=BASE_TIME + timedelta(minutes=1)) for i in range(5)
    ]
    await _ingest(client, world, *same, *later)
    for sort in ("date", "-date"):
        seen: list[str] = []
        bundle = await _get(
            client, world, OBS, {"patient": world.patient_id, "_sort": sort, "_count": "5"}
        )
        assert bundle["total"] == 12  # the next pages carry it only when _total is asked for
        while True:
            seen += _ids(bundle)
            following = _link(bundle, "next")
            if following is None:
                break
            query = parse_qs(urlsplit(following).query)
            assert "_cursor" in query and "_offset" not in query
            response = await client.get(following, headers=world.reader_headers)
            bundle = validated(response.json())
        assert len(seen) == len(set(seen)) == 12, sort
    assert "_cursor" in await _refused(client, world, OBS, {"_cursor": "yesterday"})
    refused = {"_cursor": f"{BASE_TIME.isoformat()}~x", "_sort": "code"}
    assert "_cursor" in await _refused(client, world, OBS, refused)
