"""HL7 v2 ADT (a hospital's patient feed) over real MLLP frames, on both backends.

The messages follow the shapes real senders use, written from public examples:
- A01/A08 in the HL7 v2.5.1 style of the Caristix HL7 samples
  (https://hl7-definition.caristix.com/v2/HL7v2.5.1/TriggerEvents/ADT_A01, EVN + PID + PV1;
  PID-3 with assigning authority and identifier type MR, XPN and XAD as sent by Epic/Cerner);
- A28/A31 as the "add/update person information" of the HL7 v2.5.1 standard, chapter 3.3.28
  (the ADT_A05 structure, no PV1 content);
- A40 with PID (survivor) and MRG-1 (the merged identifier), HL7 v2.5.1 chapter 3.3.40.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from medmesh.domain.registry import PostalAddress
from medmesh.ingest.mllp import MllpServer
from medmesh.ingest.pipeline import IngestPipeline
from medmesh.store.database import Database
from medmesh.store.registry import Patients
from medmesh.store.schema import dead_letters, patients
from tests.conftest import World
from tests.helpers import BASE_TIME
from tests.integration.test_mllp import Peer, msa

T = BASE_TIME.strftime("%Y%m%d%H%M%S")


def adt(event: str, control_id: str, pid: str, *more: str) -> str:
    structure = "ADT_A05" if event in ("A28", "A31") else f"ADT_{event}"
    if event == "A08":
        structure = "ADT_A01"
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
    assert "A01, A04, A08, A28, A31" in text
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
