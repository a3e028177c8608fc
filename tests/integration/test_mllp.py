"""HL7 v2 over MLLP: real frames over TCP to the listener, on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import hl7
import httpx
import pytest
from sqlalchemy import select

from medmesh import provisioning
from medmesh.ingest.mllp import MllpServer
from medmesh.ingest.pipeline import IngestPipeline
from medmesh.store.database import Database
from medmesh.store.observations import ObservationQuery, Observations
from medmesh.store.schema import dead_letters, observations
from tests.conftest import World
from tests.helpers import BASE_TIME
from tests.live_server import free_port, live_server

START, END = b"\x0b", b"\x1c\x0d"
T = BASE_TIME.strftime("%Y%m%d%H%M%S+0000")


def oru(control_id: str, *obx: str, pid: str = "PID|||MRN-1^^^urn:medmesh:mrn^MR||Doe^Jane") -> str:
    return "\r".join(
        [
            f"MSH|^~\\&|MONITOR-7^0123456789ABCDEF^EUI-64|ICU|medmesh|HOSP|{T}||"
            f"ORU^R01^ORU_R01|{control_id}|P|2.6|||NE|AL",
            pid,
            f"OBR|1|{control_id}^MONITOR-7||182777000^monitoring^SCT|||{T}",
            *obx,
        ]
    )


def nm(n: int, code: str, sub: str, value: str, unit: str) -> str:
    return f"OBX|{n}|NM|{code}^MDC|{sub}|{value}|{unit}^MDC|||||R|||{T}"


PERCENT, BPM, MMHG = "262688^MDC_DIM_PERCENT", "264864^MDC_DIM_BEAT_PER_MIN", "266016^MDC_DIM_MMHG"
VITALS = [
    "OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1|||||||X",
    nm(2, "150456^MDC_PULS_OXIM_SAT_O2", "1.1.1.1", "97", PERCENT),
    nm(3, "149530^MDC_PULS_OXIM_PULS_RATE", "1.1.1.2", "72", BPM),
    nm(4, "147842^MDC_ECG_HEART_RATE", "1.2.1.1", "73", BPM),
    "OBX|5||150020^MDC_PRESS_BLD_NONINV^MDC|1.3.1|||||||X",
    nm(6, "150021^MDC_PRESS_BLD_NONINV_SYS", "1.3.1.1", "128", MMHG),
    nm(7, "150022^MDC_PRESS_BLD_NONINV_DIA", "1.3.1.2", "82", MMHG),
    nm(8, "150023^MDC_PRESS_BLD_NONINV_MEAN", "1.3.1.3", "97", MMHG),
    nm(9, "150364^MDC_TEMP_BODY", "1.4.1.1", "36.9", "268192^MDC_DIM_DEGC"),
    nm(10, "151562^MDC_RESP_RATE", "1.5.1.1", "16", "264928^MDC_DIM_RESP_PER_MIN"),
]


class Peer:
    """A monitor's MLLP connection: one framed message out, one framed ACK back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, message: str | bytes, *, frame: bool = True) -> hl7.Message:
        body = message.encode() if isinstance(message, str) else message
        self.writer.write(START + body + END if frame else body + END)
        await self.writer.drain()
        block = await asyncio.wait_for(self.reader.readuntil(END), 10)
        assert block.startswith(START)
        return hl7.parse(block[1:-2].decode())


def msa(ack: hl7.Message) -> tuple[str, str, str]:
    segment = ack.segment("MSA")
    return str(segment(1)), str(segment(2)), ack.unescape(str(segment(3)))


@pytest.fixture
async def server(database: Database) -> AsyncIterator[MllpServer]:
    pipeline = IngestPipeline(database, clock=lambda: BASE_TIME + timedelta(hours=1))
    mllp = MllpServer(database, pipeline)
    await mllp.start("127.0.0.1", 0)
    yield mllp
    await mllp.stop()


@pytest.fixture
async def monitor(database: Database) -> str:
    credential = await provisioning.register_device(
        database, display_name="Bedside monitor", serial_number="MONITOR-7", shared_monitor=True
    )
    return credential.device_id


@pytest.fixture
async def peer(server: MllpServer) -> AsyncIterator[Peer]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    yield Peer(reader, writer)
    writer.close()


async def stored(database: Database, patient_id: str) -> dict[str, list[tuple[str, float]]]:
    async with database.read() as conn:
        found = await Observations(conn).search(ObservationQuery(patient_id=patient_id))
    result: dict[str, list[tuple[str, float]]] = {}
    for o in found:
        result.setdefault(o.code, []).extend((v.code, v.value) for v in o.values)
    return {code: sorted(values) for code, values in result.items()}


async def letters(database: Database) -> list[tuple[str | None, str | None, str]]:
    query = select(dead_letters.c.device_id, dead_letters.c.message_id, dead_letters.c.reason)
    async with database.read() as conn:
        return [tuple(r) for r in (await conn.execute(query.order_by(dead_letters.c.id))).all()]


async def count(database: Database) -> int:
    async with database.read() as conn:
        return len((await conn.execute(select(observations.c.id))).all())


async def test_pcd01_vitals_are_stored_as_loinc_observations_and_acknowledged_aa(
    database: Database, world: World, monitor: str, peer: Peer, client: httpx.AsyncClient
) -> None:
    ack = await peer.send(oru("MSG-0001", *VITALS))
    assert msa(ack) == ("AA", "MSG-0001", "6 observations accepted")
    assert "\rERR" not in str(ack)
    assert await stored(database, world.patient_id) == {
        "2708-6": [("2708-6", 97.0)],
        "8867-4": [("8867-4", 72.0), ("8867-4", 73.0)],
        "85354-9": [("8462-4", 82.0), ("8480-6", 128.0)],
        "8310-5": [("8310-5", 36.9)],
        "9279-1": [("9279-1", 16.0)],
    }
    response = await client.get(
        "/fhir/Observation",
        params={"patient": world.patient_id, "code": "http://loinc.org|85354-9"},
        headers=world.reader_headers,
    )
    (entry,) = response.json()["entry"]
    panel = entry["resource"]
    assert panel["device"]["reference"] == f"Device/{monitor}"
    assert [c["valueQuantity"]["value"] for c in panel["component"]] == [128, 82]


async def test_resent_message_is_stored_once_and_acknowledged_aa(
    database: Database, world: World, monitor: str, peer: Peer
) -> None:
    first = await peer.send(oru("MSG-0002", *VITALS))
    again = await peer.send(oru("MSG-0002", *VITALS))
    assert msa(first)[:2] == msa(again)[:2] == ("AA", "MSG-0002")
    assert await count(database) == 6


@pytest.mark.parametrize(
    ("broken", "control_id", "reason"),
    [
        ("this is not HL7", "", "malformed-body"),
        # Scheduling is no message medmesh takes (ADT and ORU are: test_hl7_adt.py).
        ("MSH|^~\\&|MONITOR-7|ICU|||2026||SIU^S12^SIU_S12|SIU-1|P|2.6", "SIU-1", "unknown-format"),
        (oru(""), "", "malformed-body"),
    ],
)
async def test_broken_message_gets_ar_and_the_next_one_on_the_connection_goes_through(
    database: Database,
    world: World,
    monitor: str,
    peer: Peer,
    broken: str,
    control_id: str,
    reason: str,
) -> None:
    ack = await peer.send(broken)
    code, echoed, text = msa(ack)
    assert (code, echoed) == ("AR", control_id)
    assert text
    assert str(ack.segment("ERR")(5)(1)(1)) == reason
    assert [r[2] for r in await letters(database)] == [reason]
    assert msa(await peer.send(oru("MSG-0003", *VITALS)))[:2] == ("AA", "MSG-0003")
    assert await count(database) == 6


async def test_rejected_message_from_a_known_monitor_is_dead_lettered_to_it(
    database: Database, monitor: str, peer: Peer
) -> None:
    await peer.send("MSH|^~\\&|MONITOR-7|ICU|||20261124||SIU^S12|SIU-2|P|2.6")
    assert await letters(database) == [(monitor, "SIU-2", "unknown-format")]


async def test_unframed_bytes_get_ar_and_the_connection_keeps_working(
    database: Database, world: World, monitor: str, peer: Peer
) -> None:
    ack = await peer.send(oru("MSG-0004", *VITALS), frame=False)
    assert msa(ack)[:2] == ("AR", "")
    assert msa(await peer.send(oru("MSG-0005", *VITALS)))[0] == "AA"


async def test_unknown_patient_gets_ae_nothing_is_stored_and_dead_letters_are_written(
    database: Database, world: World, monitor: str, peer: Peer
) -> None:
    ack = await peer.send(oru("MSG-0006", *VITALS, pid="PID|||MRN-404^^^urn:medmesh:mrn^MR"))
    code, echoed, text = msa(ack)
    assert (code, echoed) == ("AE", "MSG-0006")
    assert text == "6 of 6 observations refused: no-patient-assigned"
    assert {str(e(2)) for e in ack.segments("ERR")} == {"PID^1^3"}
    assert await count(database) == 0
    assert await letters(database) == [
        (monitor, f"MSG-0006:{n}", "no-patient-assigned") for n in (2, 3, 4, 6, 9, 10)
    ]


async def test_assigning_authority_must_match_the_identifier_system(
    database: Database, world: World, monitor: str, peer: Peer
) -> None:
    other = await peer.send(oru("MSG-0007", *VITALS, pid="PID|||MRN-1^^^OTHER-HOSPITAL^MR"))
    assert msa(other)[0] == "AE"
    bare = await peer.send(oru("MSG-0008", *VITALS, pid="PID|||MRN-1"))
    assert msa(bare)[0] == "AA"
    assert await count(database) == 6


async def test_unknown_mdc_code_gets_ae_naming_it_and_the_other_obx_are_stored(
    database: Database, world: World, monitor: str, peer: Peer
) -> None:
    made_up = nm(11, "999999^MDC_MADE_UP", "1.9.1.1", "5", PERCENT)
    ack = await peer.send(oru("MSG-0009", *VITALS, made_up))
    code, _, text = msa(ack)
    assert (code, text) == ("AE", "1 of 7 observations refused: unknown-code")
    (err,) = ack.segments("ERR")
    assert str(err(2)) == "OBX^11^3"
    assert "999999" in ack.unescape(str(err(8)))
    assert await count(database) == 6
    assert await letters(database) == [(monitor, "MSG-0009:11", "unknown-code")]


async def test_implausible_value_is_refused_without_echoing_the_value(
    database: Database, world: World, monitor: str, peer: Peer
) -> None:
    too_fast = nm(1, "147842^MDC_ECG_HEART_RATE", "1.2.1.1", "413", BPM)
    ack = await peer.send(oru("MSG-0010", too_fast))
    assert msa(ack)[0] == "AE"
    assert str(ack.segment("ERR")(5)(1)(1)) == "implausible-value"
    # The MSH carries a generated control id and timestamp that may contain any digits;
    # the value must not come back in what the ACK says about the message.
    said = "\r".join(str(segment) for segment in ack if str(segment[0]) != "MSH")
    assert "413" not in said
    assert await letters(database) == [(monitor, "MSG-0010:1", "implausible-value")]


async def test_unknown_monitor_gets_ae_and_dead_letters_without_a_device(
    database: Database, world: World, peer: Peer
) -> None:
    ack = await peer.send(oru("MSG-0011", *VITALS))
    assert msa(ack)[:2] == ("AE", "MSG-0011")
    assert {str(e(2)) for e in ack.segments("ERR")} == {f"OBX^{n}^18" for n in (2, 3, 4, 6, 9, 10)}
    assert await count(database) == 0
    assert {r[0] for r in await letters(database)} == {None}
    assert len(await letters(database)) == 6


async def test_message_without_pid_goes_to_the_patient_the_monitor_is_assigned_to(
    database: Database, world: World, monitor: str, peer: Peer
) -> None:
    await provisioning.assign_device(
        database, monitor, world.patient_id, BASE_TIME - timedelta(days=1)
    )
    ack = await peer.send(oru("MSG-0012", *VITALS, pid="PV1||I|ICU^1^1"))
    assert msa(ack)[0] == "AA"
    assert len(await stored(database, world.patient_id)) == 5


async def test_several_connections_are_served_at_once(
    database: Database, world: World, monitor: str, server: MllpServer
) -> None:
    async def one(k: int) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            return msa(await Peer(reader, writer).send(oru(f"C-{k}", *VITALS)))[0]
        finally:
            writer.close()

    assert await asyncio.gather(*(one(k) for k in range(4))) == ["AA"] * 4
    assert await count(database) == 24


async def test_stop_closes_open_connections(database: Database, server: MllpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    await asyncio.sleep(0.05)
    await server.stop()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_message_over_the_size_limit_gets_ar_and_the_connection_is_closed(
    database: Database, world: World, monitor: str
) -> None:
    small = MllpServer(database, IngestPipeline(database), max_message_bytes=1024)
    await small.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", small.port)
        peer = Peer(reader, writer)
        assert msa(await peer.send(oru("SMALL-1", VITALS[1])))[0] == "AA"
        ack = await peer.send(oru("BIG-1", *VITALS * 5))
        assert msa(ack) == ("AR", "", "message larger than the allowed size")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        await small.stop()
    assert await letters(database) == [(None, None, "malformed-body")]


async def test_medmesh_serve_listens_for_mllp_when_given_a_port(
    database_url: str,
    database: Database,
    world: World,
    monitor: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    monkeypatch.setenv("MEDMESH_MLLP_PORT", str(port))
    with live_server(database_url, tmp_path / "server.log", start_timeout=240):  # loaded CI
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        ack = await Peer(reader, writer).send(oru("SERVE-1", *VITALS))
        writer.close()
    assert msa(ack)[:2] == ("AA", "SERVE-1")
    assert await count(database) == 6  # SpO2, pulse rate, ECG heart rate, BP, temp, resp
