"""HL7 v2 from a hospital over real MLLP frames, on both backends: ADT (the patient feed) and
ORU^R01 laboratory results with LOINC-coded OBX.

The messages follow the shapes real senders use, written from public examples:
- A01/A08 in the HL7 v2.5.1 style of the Caristix HL7 samples
  (https://hl7-definition.caristix.com/v2/HL7v2.5.1/TriggerEvents/ADT_A01, EVN + PID + PV1;
  PID-3 with assigning authority and identifier type MR, XPN and XAD as sent by Epic/Cerner);
- A28/A31 as the "add/update person information" of the HL7 v2.5.1 standard, chapter 3.3.28
  (the ADT_A05 structure, no PV1 content);
- A40 with PID (survivor) and MRG-1 (the merged identifier), HL7 v2.5.1 chapter 3.3.40;
  A34 (ADT_A30: PID + MRG-1) and A39 (ADT_A40, here with the prior patient id in MRG-4 only),
  chapters 3.3.34 and 3.3.39;
- ORU^R01 laboratory results in the shape of the HL7 v2.5.1 Electronic Laboratory Reporting
  implementation guide (ORC + OBR with a LOINC panel code, one NM OBX per analyte with LOINC
  code^text^LN, UCUM units, OBX-7 reference range, OBX-8 abnormal flag, OBX-11 status F), as in
  the CDC ELR 2.5.1 samples (https://www.cdc.gov/elr/ and the Caristix ORU_R01 sample,
  https://hl7-definition.caristix.com/v2/HL7v2.5.1/TriggerEvents/ORU_R01).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import date, timedelta

import httpx
import pytest
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from sqlalchemy import select
from typer.testing import CliRunner

from medmesh import provisioning
from medmesh.access.erasure import erase_patient
from medmesh.access.identity.principals import Role
from medmesh.access.policy.decision import Decision, observation_access
from medmesh.cli import app
from medmesh.crypto.errors import DataKeyDestroyed
from medmesh.domain.consent import Consent, ConsentStatus, GranteeType
from medmesh.domain.errors import Conflict, Forbidden
from medmesh.domain.registry import PostalAddress
from medmesh.ingest.hl7_oru import PatientIdentifier
from medmesh.ingest.incoming import Incoming
from medmesh.ingest.mllp import MllpServer
from medmesh.ingest.native import parse_item
from medmesh.ingest.patient_feed import merge_patients
from medmesh.ingest.pipeline import IngestPipeline
from medmesh.store.consents import Consents
from medmesh.store.database import Database
from medmesh.store.lab_results import DETAIL
from medmesh.store.observations import ObservationQuery, Observations
from medmesh.store.registry import Assignments, Patients
from medmesh.store.schema import (
    audit_log,
    consents,
    dead_letters,
    lab_result_details,
    observations,
    patient_identifiers,
    patient_merges,
    patients,
)
from tests.accounts_fixtures import make_clinician, sign_in
from tests.conftest import ASSIGNED_SINCE, World
from tests.helpers import BASE_TIME, reading
from tests.integration.test_mllp import Peer, msa

T = BASE_TIME.strftime("%Y%m%d%H%M%S")


def adt(event: str, control_id: str, pid: str, *more: str) -> str:
    structure = "ADT_A05" if event in ("A28", "A31") else f"ADT_{event}"
    if event == "A08":
        structure = "ADT_A01"
    structure = {"A34": "ADT_A30", "A39": "ADT_A40"}.get(event, structure)
    return "\r".join(
        [
            f"MSH|^~\\&|EPICADT|GOODHEALTH|medmesh|RPM|{T}||ADT^{event}^{structure}|{control_id}"
            "|P|2.5.1",
            f"EVN|{event}|{T}",
            pid,
            *more,
        ]
    )


PID_NEW = (
    "PID|1||HOSP-40012^^^GOODHEALTH^MR~991-22-3333^^^SSA^SS||EVERYWOMAN^EVE^E^^^^L||"
    "19620320|F|||2222 HOME STREET^APT 4^GREENSBORO^NC^27401-1020^USA^H||"
    "^PRN^PH^^^555^5551234|||M"
)
PV1 = "PV1|1|I|2000^2012^01||||004777^ATTEND^AARON^A|||SUR||||ADM|A0"


@pytest.fixture
async def server(database: Database) -> AsyncIterator[MllpServer]:
    pipeline = IngestPipeline(database, clock=lambda: BASE_TIME + timedelta(hours=1))
    mllp = MllpServer(database, pipeline)
    await mllp.start("127.0.0.1", 0)
    yield mllp
    await mllp.stop()


@pytest.fixture
async def peer(server: MllpServer) -> AsyncIterator[Peer]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    yield Peer(reader, writer)
    writer.close()


async def _by_identifier(database: Database, system: str, value: str) -> object:
    async with database.read() as conn:
        return await Patients(conn).find_by_identifier(system, value)


async def test_an_a01_registers_the_patient_with_every_field_sealed(
    database: Database, peer: Peer
) -> None:
    ack = await peer.send(adt("A01", "ADT-0001", PID_NEW, PV1))
    assert msa(ack) == ("AA", "ADT-0001", "patient registered")
    patient = await _by_identifier(database, "GOODHEALTH", "HOSP-40012")
    assert patient is not None
    assert (patient.family, patient.given) == ("EVERYWOMAN", "EVE")
    assert (patient.birth_date, patient.gender) == (date(1962, 3, 20), "female")
    assert patient.address == PostalAddress(
        ("2222 HOME STREET", "APT 4"), "GREENSBORO", "NC", "27401-1020", "USA"
    )
    assert patient.phone == "(555) 5551234"
    async with database.read() as conn:
        row = (await conn.execute(select(patients))).mappings().one()
    for column in ("identifier_value", "family", "given", "birth_date", "address", "phone"):
        assert isinstance(row[column], bytes)
    raw = b"".join(row[c] for c in ("family", "address", "phone"))
    for clear in (b"EVERYWOMAN", b"GREENSBORO", b"5551234"):
        assert clear not in raw


async def test_a_fed_patient_reads_back_over_fhir_with_address_and_phone(
    database: Database, world: World, peer: Peer, client: httpx.AsyncClient
) -> None:
    fed = (
        "PID|1||MRN-1^^^urn:medmesh:mrn^MR||Doe^Jane||19620320|F|||"
        "2222 HOME STREET^^GREENSBORO^NC^27401||^PRN^PH^^^555^5551234"
    )
    assert msa(await peer.send(adt("A08", "ADT-0006", fed)))[:2] == ("AA", "ADT-0006")
    answer = await client.get(f"/fhir/Patient/{world.patient_id}", headers=world.reader_headers)
    patient = Patient.model_validate(answer.json())
    assert patient.birthDate == date(1962, 3, 20)
    assert (
        patient.address[0].line == ["2222 HOME STREET"] and patient.address[0].city == "GREENSBORO"
    )
    assert patient.telecom[0].value == "(555) 5551234"


async def test_every_pid3_identifier_is_kept_and_finds_the_patient_anywhere(
    database: Database, world: World, laboratory: str, peer: Peer, client: httpx.AsyncClient
) -> None:
    several = (
        "PID|1||MRN-1^^^urn:medmesh:mrn^MR~991-22-3333^^^SSA^SS~C-9^^^NORTHCLINIC^MR||Doe^Jane"
    )
    assert msa(await peer.send(adt("A08", "ADT-0050", several))) == (
        "AA",
        "ADT-0050",
        "patient updated",
    )
    # Named only by another of her identifiers: the same patient, not a new one.
    by_ssn = "PID|1||991-22-3333^^^SSA^SS||Doe^Janet"
    assert msa(await peer.send(adt("A08", "ADT-0051", by_ssn)))[2] == "patient updated"
    async with database.read() as conn:
        (patient,) = await Patients(conn).search()
        sealed = (await conn.execute(select(patient_identifiers.c.value))).scalars().all()
    assert (patient.id, patient.given) == (world.patient_id, "Janet")
    assert len(sealed) == 2 and all(b"991-22-3333" not in s and b"C-9" not in s for s in sealed)
    answer = await client.get(f"/fhir/Patient/{world.patient_id}", headers=world.reader_headers)
    resource = Patient.model_validate(answer.json())
    assert [(i.system, i.value) for i in resource.identifier] == [
        ("urn:medmesh:mrn", "MRN-1"),
        ("NORTHCLINIC", "C-9"),
        ("SSA", "991-22-3333"),
    ]
    for token in ("SSA|991-22-3333", "NORTHCLINIC|C-9", "C-9", "urn:medmesh:mrn|MRN-1"):
        found = await client.get(
            "/fhir/Patient", params={"identifier": token}, headers=world.reader_headers
        )
        assert [e["resource"]["id"] for e in found.json()["entry"]] == [world.patient_id], token
    # A laboratory naming her by the clinic's number files into her record.
    clinic_pid = "PID|1||C-9^^^NORTHCLINIC^MR||Doe^Jane"
    assert msa(await peer.send(cbc_oru("LAB-0050", clinic_pid, CBC[0])))[0] == "AA"
    async with database.read() as conn:
        owners = (await conn.execute(select(observations.c.patient_id))).scalars().all()
    assert owners == [world.patient_id]
    # Identifiers naming two different patients: refused, nothing changes.
    other = "PID|1||HOSP-50001^^^GOODHEALTH^MR||ROE^RICK||19800101|M"
    assert msa(await peer.send(adt("A28", "ADT-0052", other)))[2] == "patient registered"
    both = "PID|1||HOSP-50001^^^GOODHEALTH^MR~C-9^^^NORTHCLINIC^MR||ROE^RICHARD||19800101|M"
    code, control, text = msa(await peer.send(adt("A31", "ADT-0053", both)))
    assert (code, control) == ("AE", "ADT-0053") and "more than one patient" in text
    async with database.read() as conn:
        rick = await Patients(conn).find_by_identifier("GOODHEALTH", "HOSP-50001")
        held = (await conn.execute(select(patient_identifiers.c.patient_id))).scalars().all()
    assert rick is not None and rick.given == "RICK" and rick.other_identifiers == ()
    assert held == [world.patient_id, world.patient_id]
    # Erased with her.
    await erase_patient(database, world.patient_id, reason="patient's request", requested_by="dpo")
    async with database.read() as conn:
        assert (await conn.execute(select(patient_identifiers))).all() == []
        assert await Patients(conn).find_by_identifier("SSA", "991-22-3333") is None


async def test_a08_a28_and_a31_update_the_same_patient_found_by_any_identifier(
    database: Database, peer: Peer
) -> None:
    assert msa(await peer.send(adt("A04", "ADT-0002", PID_NEW, PV1)))[0] == "AA"
    moved = PID_NEW.replace(
        "2222 HOME STREET^APT 4^GREENSBORO^NC^27401-1020", "1 NEW ROAD^^DURHAM^NC^27701"
    )
    ack = await peer.send(adt("A08", "ADT-0003", moved, PV1))
    assert msa(ack) == ("AA", "ADT-0003", "patient updated")
    # A person-level update listing the identifiers in another order: the MR one finds her.
    renamed = (
        "PID|1||991-22-3333^^^SSA^SS~HOSP-40012^^^GOODHEALTH^MR||EVERYWOMAN-SMITH^EVE||19620320|F"
    )
    assert msa(await peer.send(adt("A31", "ADT-0004", renamed)))[:2] == ("AA", "ADT-0004")
    async with database.read() as conn:
        everyone = await Patients(conn).search()
    (patient,) = everyone
    assert patient.family == "EVERYWOMAN-SMITH"
    assert (patient.identifier_system, patient.identifier_value) == ("GOODHEALTH", "HOSP-40012")
    other = "PID|1||HOSP-50001^^^GOODHEALTH^MR||ROE^RICK||19800101|M"
    assert msa(await peer.send(adt("A28", "ADT-0005", other)))[2] == "patient registered"
    async with database.read() as conn:
        assert len(await Patients(conn).search()) == 2


async def test_unknown_events_are_refused_ar_and_bad_ones_ae_with_a_dead_letter(
    database: Database, peer: Peer
) -> None:
    code, control, text = msa(await peer.send(adt("A03", "ADT-0010", PID_NEW, PV1)))
    assert (code, control) == ("AR", "ADT-0010")
    assert "A03 is not accepted" in text and "A01, A04, A08, A28, A31" in text
    nameless = "PID|1||HOSP-1^^^GOODHEALTH^MR||"
    code, control, text = msa(await peer.send(adt("A04", "ADT-0011", nameless)))
    assert (code, control) == ("AE", "ADT-0011")
    assert "PID-5" in text
    bad_birth = "PID|1||HOSP-1^^^GOODHEALTH^MR||DOE^JO||1962-03-20"
    assert msa(await peer.send(adt("A04", "ADT-0012", bad_birth)))[0] == "AE"
    async with database.read() as conn:
        assert await Patients(conn).search() == []
        reasons = (await conn.execute(select(dead_letters.c.reason))).scalars().all()
    assert sorted(reasons) == ["malformed", "malformed", "unknown-format"]


async def test_a40_merging_a_patient_into_itself_is_refused_ae(
    database: Database, world: World, peer: Peer
) -> None:
    same = "PID|1||MRN-1^^^urn:medmesh:mrn^MR||Doe^Jane"
    ack = await peer.send(adt("A40", "ADT-0020", same, "MRG|MRN-1^^^urn:medmesh:mrn^MR"))
    code, control, text = msa(ack)
    assert (code, control) == ("AE", "ADT-0020")
    assert "merged into itself" in text
    async with database.read() as conn:
        assert [p.id for p in await Patients(conn).search()] == [world.patient_id]
        reasons = (await conn.execute(select(dead_letters.c.reason))).scalars().all()
    assert reasons == ["malformed"]


@pytest.mark.parametrize(
    ("event", "mrg"),
    [("A34", "MRG|HOSP-2^^^GOODHEALTH^MR"), ("A39", "MRG||||HOSP-2^^^GOODHEALTH^MR")],
)
async def test_a34_and_a39_merge_the_two_records_as_a40_does(
    database: Database, peer: Peer, event: str, mrg: str
) -> None:
    survivor = "PID|1||HOSP-1^^^GOODHEALTH^MR||ROE^RICK||19700101|M"
    duplicate = "PID|1||HOSP-2^^^GOODHEALTH^MR||ROE^RICHARD||19700101|M"
    assert msa(await peer.send(adt("A04", "ADT-0040", survivor)))[0] == "AA"
    assert msa(await peer.send(adt("A04", "ADT-0041", duplicate)))[0] == "AA"
    code, control, text = msa(await peer.send(adt(event, "ADT-0042", survivor, mrg)))
    assert (code, control) == ("AA", "ADT-0042") and text.startswith("patients merged")
    kept = await _by_identifier(database, "GOODHEALTH", "HOSP-1")
    async with database.read() as conn:
        merges = (await conn.execute(select(patient_merges))).mappings().all()
    assert [(m["survivor_id"], m["undone_at"]) for m in merges] == [(kept.id, None)]
    # Later messages naming the merged identifier reach the survivor.
    update = "PID|1||HOSP-2^^^GOODHEALTH^MR||ROE^RICK J||19700101|M"
    assert msa(await peer.send(adt("A08", "ADT-0043", update)))[:2] == ("AA", "ADT-0043")
    again = await _by_identifier(database, "GOODHEALTH", "HOSP-1")
    assert again.given == "RICK J"
    itself = await peer.send(adt(event, "ADT-0044", survivor, "MRG|HOSP-1^^^GOODHEALTH^MR"))
    assert msa(itself)[0] == "AE" and "merged into itself" in msa(itself)[2]


def lab_oru(control_id: str, pid: str, *obx: str) -> str:
    return "\r".join(
        [
            f"MSH|^~\\&|LAB|GOODHEALTH LAB^2.16.840.1.113883.19.4.6^ISO|medmesh|RPM|{T}||"
            f"ORU^R01^ORU_R01|{control_id}|P|2.5.1|||AL|NE",
            pid,
            "ORC|RE|ORD-448^EHR|ACC-7781^LAB",
            "OBR|1|ORD-448^EHR|ACC-7781^LAB|24323-8^Comprehensive metabolic 2000 panel - Serum "
            f"or Plasma^LN|||{T}|||||||||||||||{T}||CH|F",
            *obx,
        ]
    )


PANEL = [
    "OBX|1|NM|2823-3^Potassium [Moles/volume] in Serum or Plasma^LN||5.9|mmol/L^millimole per "
    f"liter^UCUM|3.5-5.1|H|||F|||{T}",
    "OBX|2|NM|2951-2^Sodium [Moles/volume] in Serum or Plasma^LN||140|mmol/L^^UCUM|136-145|N"
    f"|||F|||{T}",
    f"OBX|3|NM|2345-7^Glucose [Mass/volume] in Serum or Plasma^LN||99|mg/dL|70-99|N|||F|||{T}",
    "OBX|4|NM|2160-0^Creatinine [Mass/volume] in Serum or Plasma^LN||1.1|mg/dL^^UCUM|<1.3|"
    f"|||F|||{T}",
]


@pytest.fixture
async def laboratory(database: Database) -> str:
    """The hospital laboratory's interface, registered under its MSH-3 name; its results'
    patient comes from PID, as a shared monitor's does."""
    credential = await provisioning.register_device(
        database, display_name="Hospital laboratory", serial_number="LAB", shared_monitor=True
    )
    return credential.device_id


async def test_lab_results_become_laboratory_observations_with_ranges_and_flags(
    database: Database, world: World, laboratory: str, peer: Peer, client: httpx.AsyncClient
) -> None:
    pid = "PID|1||MRN-1^^^urn:medmesh:mrn^MR||Doe^Jane||19620320|F"
    ack = await peer.send(lab_oru("LAB-0001", pid, *PANEL))
    assert msa(ack) == ("AA", "LAB-0001", "4 observations accepted")
    # Vitals and labs side by side in the patient's record.
    vitals = {
        "readings": [
            {
                "id": "hr",
                "type": "heart-rate",
                "time": BASE_TIME.isoformat(),
                "value": 70,
                "unit": "/min",
            }
        ]
    }
    assert (
        await client.post("/ingest/v1/readings", json=vitals, headers=world.device_headers)
    ).status_code == 202
    found = await client.get(
        "/fhir/Observation", params={"patient": world.patient_id}, headers=world.reader_headers
    )
    resources = [Observation.model_validate(e["resource"]) for e in found.json()["entry"]]
    by_code = {o.code.coding[0].code: o for o in resources}
    assert set(by_code) == {"2823-3", "2951-2", "2345-7", "2160-0", "8867-4"}
    potassium = by_code["2823-3"]
    assert potassium.category[0].coding[0].code == "laboratory"
    assert float(potassium.valueQuantity.value) == 5.9
    (reference,) = potassium.referenceRange
    assert (float(reference.low.value), float(reference.high.value)) == (3.5, 5.1)
    assert potassium.interpretation[0].coding[0].code == "H"
    creatinine = by_code["2160-0"]
    assert creatinine.referenceRange[0].low is None
    assert float(creatinine.referenceRange[0].high.value) == 1.3
    assert creatinine.interpretation is None
    assert by_code["8867-4"].category[0].coding[0].code == "vital-signs"
    assert by_code["8867-4"].referenceRange is None
    async with database.read() as conn:
        sealed = (await conn.execute(select(lab_result_details.c.detail))).scalars().all()
    assert len(sealed) == 4 and all(b"3.5-5.1" not in s for s in sealed)
    again = await peer.send(lab_oru("LAB-0001", pid, *PANEL))
    assert msa(again)[0] == "AA"
    async with database.read() as conn:
        assert len((await conn.execute(select(lab_result_details))).all()) == 4


async def test_lab_results_for_an_unknown_patient_get_ae_and_dead_letters(
    database: Database, world: World, laboratory: str, peer: Peer
) -> None:
    stranger = "PID|1||NOBODY-1^^^urn:medmesh:mrn^MR||Nobody^No"
    code, control, text = msa(await peer.send(lab_oru("LAB-0002", stranger, *PANEL)))
    assert (code, control) == ("AE", "LAB-0002")
    assert "no-patient-assigned" in text
    async with database.read() as conn:
        assert (await conn.execute(select(observations))).all() == []
        assert (await conn.execute(select(lab_result_details))).all() == []
        reasons = (await conn.execute(select(dead_letters.c.reason))).scalars().all()
    assert reasons == ["no-patient-assigned"] * 4


def cbc_oru(control_id: str, pid: str, *obx: str) -> str:
    """A CBC panel (LOINC 58410-2, https://loinc.org/58410-2, its member codes and UCUM units)
    in the ELR 2.5.1 layout above, with the rest of the CMP (24323-8) a laboratory reports."""
    return "\r".join(
        [
            f"MSH|^~\\&|LAB|GOODHEALTH LAB^2.16.840.1.113883.19.4.6^ISO|medmesh|RPM|{T}||"
            f"ORU^R01^ORU_R01|{control_id}|P|2.5.1|||AL|NE",
            pid,
            "ORC|RE|ORD-449^EHR|ACC-7782^LAB",
            "OBR|1|ORD-449^EHR|ACC-7782^LAB|58410-2^CBC panel - Blood by Automated count^LN|||"
            f"{T}|||||||||||||||{T}||HM|F",
            *obx,
        ]
    )


CBC = [
    "OBX|1|NM|6690-2^Leukocytes [#/volume] in Blood by Automated count^LN||11.8|10*3/uL^^UCUM|"
    f"4.0-10.5|H|||F|||{T}",
    "OBX|2|NM|789-8^Erythrocytes [#/volume] in Blood by Automated count^LN||4.61|10*6/uL^^UCUM|"
    f"4.20-5.40|N|||F|||{T}",
    f"OBX|3|NM|718-7^Hemoglobin [Mass/volume] in Blood^LN||13.9|g/dL^^UCUM|12.0-16.0|N|||F|||{T}",
    f"OBX|4|NM|4544-3^Hematocrit [Volume Fraction] of Blood by Automated count^LN||41.2|%|"
    f"36.0-46.0|N|||F|||{T}",
    f"OBX|5|NM|787-2^MCV [Entitic volume] by Automated count^LN||89|fL|80-100|N|||F|||{T}",
    "OBX|6|NM|777-3^Platelets [#/volume] in Blood by Automated count^LN||140|10*3/uL^^UCUM|"
    f"150-400|L|||P|||{T}",
    "OBX|7|NM|1751-7^Albumin [Mass/volume] in Serum or Plasma^LN||4.1|g/dL^^UCUM|3.5-5.0|N"
    f"|||F|||{T}",
    "OBX|8|SN|33914-3^Glomerular filtration rate/1.73 sq M.predicted^LN||>^60|"
    f"mL/min/{{1.73_m2}}^^UCUM|>60|N|||F|||{T}",
]
# What medmesh refuses, each alone: a local code, a text result, a unit that is not UCUM.
LOCAL_CODE = f"OBX|9|NM|HEMOLYSIS^Hemolysis index^99LAB||12|1|0-50|N|||F|||{T}"
TEXT_RESULT = f"OBX|10|ST|5778-6^Color of Urine^LN||Straw||||||F|||{T}"  # a text result
NOT_UCUM = (
    f"OBX|11|NM|2075-0^Chloride [Moles/volume] in Serum or Plasma^LN||101|mEq/L|98-107|N|||F|||{T}"
)


def err_segments(ack: object) -> list[list[str]]:
    """The ERR segments of an ACK, each split into its fields (ERR-2 at index 2)."""
    return [s.split("|") for s in str(ack).split("\r") if s.startswith("ERR|")]


async def test_a_cbc_panel_of_any_loinc_codes_becomes_laboratory_observations(
    database: Database, world: World, laboratory: str, peer: Peer, client: httpx.AsyncClient
) -> None:
    pid = "PID|1||MRN-1^^^urn:medmesh:mrn^MR||Doe^Jane"
    ack = await peer.send(cbc_oru("LAB-0003", pid, *CBC, LOCAL_CODE, TEXT_RESULT, NOT_UCUM))
    code, control, text = msa(ack)
    assert (code, control) == ("AE", "LAB-0003")
    assert text.startswith("3 of 11 observations refused")
    errors = {e[2]: (e[5], e[8]) for e in err_segments(ack)}
    assert errors["OBX^9^3"][0] == "unknown-code^^99MEDMESH"
    assert "neither LOINC (LN) nor MDC" in errors["OBX^9^3"][1]
    assert errors["OBX^10^2"][0] == "malformed^^99MEDMESH"
    assert "text and coded laboratory results are not stored" in errors["OBX^10^2"][1]
    assert errors["OBX^11^6"][0] == "unit-not-convertible^^99MEDMESH"
    found = await client.get(
        "/fhir/Observation",
        params={"patient": world.patient_id, "_count": "50"},
        headers=world.reader_headers,
    )
    resources = [Observation.model_validate(e["resource"]) for e in found.json()["entry"]]
    by_code = {o.code.coding[0].code: o for o in resources}
    assert set(by_code) == {
        "6690-2",
        "789-8",
        "718-7",
        "4544-3",
        "787-2",
        "777-3",
        "1751-7",
        "33914-3",
    }
    assert all(o.category[0].coding[0].code == "laboratory" for o in resources)
    wbc = by_code["6690-2"]
    assert wbc.code.coding[0].display == "Leukocytes [#/volume] in Blood by Automated count"
    assert wbc.code.coding[0].system == "http://loinc.org"
    assert (float(wbc.valueQuantity.value), wbc.valueQuantity.code) == (11.8, "10*3/uL")
    assert wbc.valueQuantity.system == "http://unitsofmeasure.org"
    assert (float(wbc.referenceRange[0].low.value), float(wbc.referenceRange[0].high.value)) == (
        4.0,
        10.5,
    )
    assert wbc.interpretation[0].coding[0].code == "H"
    assert wbc.status == "final"
    assert by_code["777-3"].status == "preliminary"
    egfr = by_code["33914-3"]
    assert (egfr.valueQuantity.comparator, float(egfr.valueQuantity.value)) == (">", 60)
    assert egfr.valueQuantity.code == "mL/min/{1.73_m2}"
    # Hemoglobin is in medmesh's vocabulary: its name is medmesh's, the rest the same.
    assert by_code["718-7"].interpretation[0].coding[0].code == "N"
    # Searchable by code, with or without the system, alone or with others.
    for code_param in ("6690-2", "http://loinc.org|6690-2", "6690-2,777-3"):
        hits = await client.get(
            "/fhir/Observation",
            params={"patient": world.patient_id, "code": code_param},
            headers=world.reader_headers,
        )
        codes = {e["resource"]["code"]["coding"][0]["code"] for e in hits.json()["entry"]}
        assert codes == set(code_param.replace("http://loinc.org|", "").split(","))
    labs = await client.get(
        "/fhir/Observation",
        params={"patient": world.patient_id, "category": "laboratory", "_count": "50"},
        headers=world.reader_headers,
    )
    assert len(labs.json()["entry"]) == 8
    vital = await client.get(
        "/fhir/Observation",
        params={"patient": world.patient_id, "category": "vital-signs"},
        headers=world.reader_headers,
    )
    assert vital.json().get("entry", []) == []
    # Each value sealed with the patient's key, the test's name too; refusals are dead letters.
    async with database.read() as conn:
        values = (await conn.execute(select(observations.c.value))).scalars().all()
        sealed = (await conn.execute(select(lab_result_details.c.detail))).scalars().all()
        reasons = (await conn.execute(select(dead_letters.c.reason))).scalars().all()
    assert len(values) == 8 and all(isinstance(v, bytes) and b"11.8" not in v for v in values)
    assert len(sealed) == 8 and all(b"Leukocytes" not in s for s in sealed)
    assert sorted(reasons) == ["malformed", "unit-not-convertible", "unknown-code"]
    everything = await client.get(
        f"/fhir/Patient/{world.patient_id}/$everything", headers=world.reader_headers
    )
    assert everything.status_code == 200
    in_everything = {
        e["resource"]["code"]["coding"][0]["code"]
        for e in everything.json()["entry"]
        if e["resource"]["resourceType"] == "Observation"
    }
    assert {"6690-2", "33914-3"} <= in_everything
    # $lastn gives the newest result of every code held, the vocabulary's or not.
    last = await client.get(
        "/fhir/Observation/$lastn",
        params={"patient": world.patient_id, "category": "laboratory"},
        headers=world.reader_headers,
    )
    assert {e["resource"]["code"]["coding"][0]["code"] for e in last.json()["entry"]} == set(
        by_code
    )
    one = await client.get(
        "/fhir/Observation/$lastn",
        params={"patient": world.patient_id, "code": "6690-2"},
        headers=world.reader_headers,
    )
    assert [e["resource"]["valueQuantity"]["value"] for e in one.json()["entry"]] == [11.8]


async def test_a_consent_to_laboratory_results_covers_every_loinc_code_and_no_other_category(
    database: Database, world: World, laboratory: str, peer: Peer, client: httpx.AsyncClient
) -> None:
    """What a consent limited to categories lets a search return (the access groups the policy
    builds, store/observations.py): codes outside the vocabulary are laboratory results."""
    pid = "PID|1||MRN-1^^^urn:medmesh:mrn^MR||Doe^Jane"
    assert msa(await peer.send(cbc_oru("LAB-0009", pid, CBC[0], CBC[2], CBC[7])))[0] == "AA"
    vitals = {
        "readings": [
            {"id": "hr", "type": "heart-rate", "time": BASE_TIME.isoformat(), "value": 70,
             "unit": "/min"}
        ]
    }  # fmt: skip
    assert (
        await client.post("/ingest/v1/readings", json=vitals, headers=world.device_headers)
    ).status_code == 202
    seen = {}
    for categories in (["laboratory"], ["vital-signs"], ["vital-signs", "laboratory"]):
        access = observation_access({world.patient_id: _limited(categories)})
        async with database.read() as conn:
            found = await Observations(conn).search(ObservationQuery(access=access, limit=50))
        seen[tuple(categories)] = sorted(o.code for o in found)
    assert seen == {
        ("laboratory",): ["33914-3", "6690-2", "718-7"],
        ("vital-signs",): ["8867-4"],
        ("vital-signs", "laboratory"): ["33914-3", "6690-2", "718-7", "8867-4"],
    }


def _limited(categories: list[str]) -> Decision:
    return Decision(True, "consent:test", "TREAT", frozenset(categories))


async def test_a_corrected_result_replaces_the_one_it_corrects(
    database: Database, world: World, laboratory: str, peer: Peer, client: httpx.AsyncClient
) -> None:
    pid = "PID|1||MRN-1^^^urn:medmesh:mrn^MR||Doe^Jane"
    assert msa(await peer.send(cbc_oru("LAB-0006", pid, CBC[0], CBC[5])))[0] == "AA"
    corrected = "OBX|1|NM|777-3^Platelets [#/volume] in Blood by Automated count^LN||152|" + (
        f"10*3/uL^^UCUM|150-400|N|||C|||{T}"
    )
    for _ in range(2):  # the correction resent after a lost ACK replaces nothing more
        assert msa(await peer.send(cbc_oru("LAB-0007", pid, corrected))) == (
            "AA",
            "LAB-0007",
            "1 observations accepted",
        )
    found = await client.get(
        "/fhir/Observation",
        params={"patient": world.patient_id, "code": "777-3"},
        headers=world.reader_headers,
    )
    (platelets,) = [Observation.model_validate(e["resource"]) for e in found.json()["entry"]]
    assert (platelets.status, float(platelets.valueQuantity.value)) == ("corrected", 152)
    assert platelets.interpretation[0].coding[0].code == "N"
    async with database.read() as conn:
        codes = sorted((await conn.execute(select(observations.c.code))).scalars().all())
        details = (await conn.execute(select(lab_result_details))).all()
    assert codes == ["6690-2", "777-3"] and len(details) == 2
    for status, expected in (
        ("final", {"6690-2"}),
        ("corrected", {"777-3"}),
        ("preliminary", set()),
    ):
        hits = await client.get(
            "/fhir/Observation",
            params={"patient": world.patient_id, "status": status},
            headers=world.reader_headers,
        )
        assert {
            e["resource"]["code"]["coding"][0]["code"] for e in hits.json().get("entry", [])
        } == expected


@pytest.mark.parametrize(
    ("obx", "field", "detail"),
    [
        (f"OBX|1|NM|6690-2^WBC^LN||11.8|10*3/uL|||||Q|||{T}", "OBX^1^11", "OBX-11 result status"),
        (f"OBX|1|SN|6690-2^WBC^LN||^1^-^5|10*3/uL|||||F|||{T}", "OBX^1^5", "ranges and ratios"),
        (f"OBX|1|SN|6690-2^WBC^LN||<>^5|10*3/uL|||||F|||{T}", "OBX^1^5", "comparator"),
        (f"OBX|1|NM|6690-2^WBC^LN||eleven|10*3/uL|||||F|||{T}", "OBX^1^5", "NM number"),
        (f"OBX|1|NM|12345^WBC^LN||11.8|10*3/uL|||||F|||{T}", "OBX^1^3", "not a LOINC code"),
        (f"OBX|1|CWE|6690-2^WBC^LN||H^High^L||||||F|||{T}", "OBX^1^2", "OBX-2 must be NM or SN"),
        ("OBX|1|NM|6690-2^WBC^LN||11.8|10*3/uL|||||F|||2026-11-25", "OBX^1^14", "date/time"),
    ],
)
async def test_a_bad_laboratory_result_is_refused_alone_with_a_specific_reason(
    database: Database,
    world: World,
    laboratory: str,
    peer: Peer,
    obx: str,
    field: str,
    detail: str,
) -> None:
    pid = "PID|1||MRN-1^^^urn:medmesh:mrn^MR||Doe^Jane"
    good = CBC[1].replace("OBX|2|", "OBX|2|")
    ack = await peer.send(cbc_oru("LAB-0005", pid, obx, good))
    assert msa(ack)[:2] == ("AE", "LAB-0005")
    (error,) = err_segments(ack)
    assert error[2] == field and detail in error[8]
    async with database.read() as conn:
        assert (await conn.execute(select(observations.c.code))).scalars().all() == ["789-8"]


async def test_erasure_removes_lab_findings_and_fed_contact_details_for_good(
    database: Database, world: World, laboratory: str, peer: Peer
) -> None:
    pid = "PID|1||MRN-1^^^urn:medmesh:mrn^MR||Doe^Jane||19620320|F|||1 ELM ST^^DURHAM^NC^27701"
    assert msa(await peer.send(adt("A08", "ADT-0030", pid)))[0] == "AA"
    assert msa(await peer.send(lab_oru("LAB-0004", pid, *PANEL)))[0] == "AA"
    assert msa(await peer.send(cbc_oru("LAB-0008", pid, *CBC)))[0] == "AA"
    async with database.read() as conn:
        before = (await conn.execute(select(lab_result_details))).mappings().all()
        address = (await conn.execute(select(patients.c.address))).scalar_one()
    assert len(before) == 12 and address is not None
    await erase_patient(database, world.patient_id, reason="patient's request", requested_by="dpo")
    async with database.read() as conn:
        assert (await conn.execute(select(lab_result_details))).all() == []
        assert (await conn.execute(select(observations))).all() == []
        assert (await conn.execute(select(patients))).all() == []
    # A copy of the rows taken before the erasure opens no more: the patient's key is gone.
    with pytest.raises(DataKeyDestroyed):
        key = await database.cipher.key(world.patient_id)
        key.open_text(before[0]["detail"], DETAIL, before[0]["observation_id"])


async def _readings(database: Database) -> dict[str, tuple[str, tuple[float, ...]]]:
    """Every stored reading: id → (patient, values), decrypted with its patient's key."""
    async with database.read() as conn:
        rows = (await conn.execute(select(observations.c.id))).scalars().all()
        found = await Observations(conn).get_many(list(rows))
    return {o.id: (o.patient_id, tuple(v.value for v in o.values)) for o in found}


async def test_a40_moves_readings_devices_and_consents_and_an_admin_can_undo_it(
    database: Database, world: World, laboratory: str, peer: Peer
) -> None:
    # The hospital registered Jane twice; her second record has a cuff, readings and a consent.
    duplicate = await provisioning.create_patient(
        database, family="Doe", given="Jane", identifier="MRN-2"
    )
    cuff = await provisioning.register_device(database, display_name="Cuff 2")
    await provisioning.assign_device(database, cuff.device_id, duplicate.id, ASSIGNED_SINCE)
    pipeline = IngestPipeline(database, clock=lambda: BASE_TIME + timedelta(hours=1))
    for device, patient_readings in (
        (world.device_id, [reading("a-1"), reading("a-2", value=75)]),
        (
            cuff.device_id,
            [
                reading("b-1", value=88),
                reading("b-2", "blood-pressure", {"systolic": 141, "diastolic": 92}, "mm[Hg]"),
            ],
        ),
    ):
        batch = [Incoming("{}", r["id"], reading=parse_item(r)) for r in patient_readings]
        assert len((await pipeline.ingest(device, "test", batch)).stored) == 2
    pid_2 = "PID|1||MRN-2^^^urn:medmesh:mrn^MR||Doe^Jane"
    assert msa(await peer.send(lab_oru("LAB-0010", pid_2, *PANEL)))[0] == "AA"
    consent = Consent(
        str(uuid.uuid4()), duplicate.id, ConsentStatus.ACTIVE, GranteeType.PRACTITIONER,
        world.clinician_id, frozenset(), frozenset(), None, None, BASE_TIME, "patient",
    )  # fmt: skip
    async with database.write() as conn:
        await Consents(conn).add(consent)
    before = await _readings(database)
    assert len(before) == 8

    a40 = adt(
        "A40",
        "ADT-0040",
        "PID|1||MRN-1^^^urn:medmesh:mrn^MR||Doe^Jane",
        "MRG|MRN-2^^^urn:medmesh:mrn^MR",
    )
    code, control, text = msa(await peer.send(a40))
    assert (code, control) == ("AA", "ADT-0040")
    merge_id = text.rsplit(" ", 1)[1].rstrip(")")
    merged = await _readings(database)
    # Every reading is still there, once, readable, on the survivor.
    assert {k: v[1] for k, v in merged.items()} == {k: v[1] for k, v in before.items()}
    assert {v[0] for v in merged.values()} == {world.patient_id}
    async with database.read() as conn:
        history = await Assignments(conn).for_device(cuff.device_id)
        consent_owner = (
            await conn.execute(select(consents.c.patient_id).where(consents.c.id == consent.id))
        ).scalar_one()
        audited = (
            (
                await conn.execute(
                    select(audit_log.c.patient_id).where(audit_log.c.subtype == "merge")
                )
            )
            .scalars()
            .all()
        )
        lab = await Observations(conn).search(ObservationQuery(patient_id=world.patient_id))
    assert [a.patient_id for a in history] == [world.patient_id]
    assert consent_owner == world.patient_id
    assert sorted(audited) == sorted([world.patient_id, duplicate.id])
    assert {o.lab.interpretation for o in lab if o.lab is not None} == {"H", "N", None}

    # The same A40 again changes nothing; new results naming the old MRN reach the survivor.
    assert msa(await peer.send(a40))[2].startswith("patients merged already")
    assert len(await _readings(database)) == 8
    later = PANEL[0].replace(T, (BASE_TIME + timedelta(minutes=30)).strftime("%Y%m%d%H%M%S"))
    assert msa(await peer.send(lab_oru("LAB-0011", pid_2, later)))[0] == "AA"
    after_merge = await _readings(database)
    assert len(after_merge) == 9
    (new_id,) = set(after_merge) - set(before)
    assert after_merge[new_id][0] == world.patient_id

    # Undone by an organisation admin (medmesh patient unmerge): what moved goes back.
    with pytest.raises(Forbidden):
        await provisioning.undo_merge(database, merge_id, by_username="dr-test-mrn-1")
    await provisioning.create_user(
        database,
        username="admin",
        display_name="Admin",
        role=Role.ORG_ADMIN,
        password="correct horse battery staple",
    )
    await provisioning.undo_merge(database, merge_id, by_username="admin")
    undone = await _readings(database)
    assert {k: v for k, v in undone.items() if k != new_id} == before
    assert undone[new_id][0] == world.patient_id  # arrived for the survivor: stays
    async with database.read() as conn:
        history = await Assignments(conn).for_device(cuff.device_id)
        assert [a.patient_id for a in history] == [duplicate.id]
        unmerged = (
            (
                await conn.execute(
                    select(audit_log.c.actor_id).where(audit_log.c.subtype == "unmerge")
                )
            )
            .scalars()
            .all()
        )
    assert len(unmerged) == 2
    with pytest.raises(Conflict):
        await provisioning.undo_merge(database, merge_id, by_username="admin")


def test_the_unmerge_command_separates_the_records(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDMESH_DATABASE_URL", database_url)

    async def merged() -> tuple[str, str]:
        database = Database(database_url)
        try:
            keep = await provisioning.create_patient(
                database, family="Doe", given="Jane", identifier="MRN-1"
            )
            gone = await provisioning.create_patient(
                database, family="Doe", given="Jane", identifier="MRN-2"
            )
            await provisioning.create_user(
                database,
                username="admin",
                display_name="Admin",
                role=Role.ORG_ADMIN,
                password="correct horse battery staple",
            )
            record = await merge_patients(
                database,
                [PatientIdentifier("MRN-1", ("urn:medmesh:mrn",))],
                [PatientIdentifier("MRN-2", ("urn:medmesh:mrn",))],
                sender="EPICADT",
                at=BASE_TIME,
            )
            assert keep.id != gone.id
            return record.merge_id, gone.id
        finally:
            await database.dispose()

    merge_id, gone_id = asyncio.run(merged())
    runner = CliRunner()
    refused = runner.invoke(app, ["patient", "unmerge", merge_id, "--by", "nobody"])
    assert refused.exit_code == 1 and "organisation admin" in refused.output
    done = runner.invoke(app, ["patient", "unmerge", merge_id, "--by", "admin"])
    assert done.exit_code == 0, done.output
    assert f"{gone_id} separated from" in done.output
    again = runner.invoke(app, ["patient", "unmerge", merge_id, "--by", "admin"])
    assert again.exit_code == 1 and "undone already" in again.output


async def test_the_patient_page_shows_lab_results_beside_the_vitals(
    database: Database, world: World, laboratory: str, peer: Peer, client: httpx.AsyncClient
) -> None:
    pid = "PID|1||MRN-1^^^urn:medmesh:mrn^MR||Doe^Jane"
    assert msa(await peer.send(lab_oru("LAB-0020", pid, *PANEL)))[0] == "AA"
    assert msa(await peer.send(cbc_oru("LAB-0021", pid, CBC[0], CBC[5], CBC[7])))[0] == "AA"
    doctor = await make_clinician(database, "dr.lab", "dr lab")
    await provisioning.add_to_care_team(database, world.patient_id, doctor.user_id, added_by="t")
    await sign_in(client, doctor)
    page = await client.get(f"/patients/{world.patient_id}")
    assert page.status_code == 200
    section = page.text.split('id="labs-heading"', 1)[1].split("</section>", 1)[0]
    rows = re.findall(r"<tr( class=\"lab-abnormal\")?>\s*<th scope=\"row\">([^<]+)</th>", section)
    assert sorted(name for _, name in rows) == [
        "Creatinine [Mass/volume] in Serum or Plasma",
        "Glomerular filtration rate/1.73 sq M.predicted",
        "Glucose [Mass/volume] in Serum or Plasma",
        "Leukocytes [#/volume] in Blood by Automated count",
        "Platelets [#/volume] in Blood by Automated count",
        "Potassium [Moles/volume] in Serum or Plasma",
        "Sodium [Moles/volume] in Serum or Plasma",
    ]
    assert sorted(name for flagged, name in rows if flagged) == [
        "Leukocytes [#/volume] in Blood by Automated count",
        "Platelets [#/volume] in Blood by Automated count",
        "Potassium [Moles/volume] in Serum or Plasma",
    ]
    assert "5.9 mmol/L" in section and "3.5-5.1" in section and "High" in section
    assert "11.8 10*3/uL" in section and "4.0-10.5" in section
    assert '140 10*3/uL <span class="lab-status">(preliminary)</span>' in section
    assert "&gt;60 mL/min/{1.73_m2}" in section
