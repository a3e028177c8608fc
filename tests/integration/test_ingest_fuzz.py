"""Fuzzing HTTP ingest through the real app and a real (SQLite) database.

Whatever a device sends, the server answers without a server error, answers every refusal as a
FHIR OperationOutcome, accounts for every reading it was sent, and stores exactly the readings
that were valid, with the canonical code, value and time: never a wrong row.

Hypothesis drives sync tests (async tests and @given do not mix with function-scoped fixtures):
each test runs the app, with its lifespan, on one event loop of its own (`asyncio.Runner`)
against one migrated SQLite file, and each example is one `runner.run`. Every example registers
a fresh device, so the rows and dead letters of an example are those with its device id.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from medmesh import provisioning
from medmesh.app import create_app
from medmesh.config import Settings
from medmesh.domain.errors import InvalidReading, RejectReason
from medmesh.domain.reading import observation_id
from medmesh.domain.units import UNIT_ALIASES, convert
from medmesh.domain.validation import check_effective_time, resolve_measure, validate_values
from medmesh.domain.vocabulary import MEASURES, Measure, Quantity
from medmesh.ingest.native import MAX_MESSAGE_ID_LENGTH, parse_item
from medmesh.store import migrate
from medmesh.store.database import Database
from medmesh.store.observations import COMPONENT_VALUE, VALUE, component_row
from medmesh.store.schema import dead_letters, observation_components, observations
from tests.conftest import ASSIGNED_SINCE, World
from tests.helpers import reading

URL = "/ingest/v1/readings"
# Small limits, so that fuzzed bodies reach them.
MAX_BODY = 8_192
MAX_READINGS = 12
SKEW = timedelta(seconds=300)
FIELDS = ("id", "type", "time", "value", "unit")

FUZZ = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one database per test, shared by its examples
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

# A value of a stored row: (code, value, unit); panels have one per component, sorted.
Values = tuple[tuple[str, float, str], ...]


# --- running one example ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    code: str
    effective: datetime
    values: Values


@dataclass(frozen=True, slots=True)
class Exchange:
    status: int
    answer: Any
    sent_at: datetime
    rows: dict[str, Row]  # by message id
    dead_letters: int


class FuzzServer:
    """The app on one event loop, kept for all examples of a test (a fresh loop and lifespan per
    example would cost more than the example itself)."""

    def __init__(self, runner: asyncio.Runner, app: FastAPI, patient_id: str) -> None:
        self._runner = runner
        self._app = app
        self.patient_id = patient_id

    def post(self, body: bytes) -> Exchange:
        return self._runner.run(self._post(body))

    async def _post(self, body: bytes) -> Exchange:
        database: Database = self._app.state.services.database
        device = await provisioning.register_device(database, display_name="fuzzer")
        await provisioning.assign_device(
            database, device.device_id, self.patient_id, ASSIGNED_SINCE
        )
        transport = httpx.ASGITransport(app=self._app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            sent_at = datetime.now(UTC)
            response = await http.post(
                URL,
                content=body,
                headers={
                    "Authorization": f"Bearer {device.secret}",
                    "Content-Type": "application/json",
                },
            )
        rows = await self._rows(database, device.device_id)
        async with database.read() as conn:
            letters = (
                await conn.execute(
                    select(func.count())
                    .select_from(dead_letters)
                    .where(dead_letters.c.device_id == device.device_id)
                )
            ).scalar_one()
        try:
            answer = response.json()
        except ValueError:
            answer = response.text
        return Exchange(response.status_code, answer, sent_at, rows, int(letters))

    async def _rows(self, database: Database, device_id: str) -> dict[str, Row]:
        mine = select(observations).where(observations.c.device_id == device_id)
        async with database.read() as conn:
            stored = (await conn.execute(mine)).mappings().all()
            ids = [r["id"] for r in stored]
            their_parts = select(observation_components).where(
                observation_components.c.observation_id.in_(ids)
            )
            parts = (await conn.execute(their_parts)).mappings().all()
        # Values are sealed with the patient's key: open them as the store does.
        key = await database.cipher.key(self.patient_id)
        rows: dict[str, Row] = {}
        for r in stored:
            # Every row is the observation of its (device, message id), for the one patient.
            assert r["id"] == observation_id(device_id, r["message_id"])
            assert r["patient_id"] == self.patient_id
            if r["value"] is not None:
                value = key.open_float(r["value"], VALUE, r["id"])
                values: Values = ((r["code"], value, r["unit"]),)
            else:
                values = tuple(
                    sorted(
                        (
                            p["code"],
                            key.open_float(
                                p["value"], COMPONENT_VALUE, component_row(r["id"], p["code"])
                            ),
                            p["unit"],
                        )
                        for p in parts
                        if p["observation_id"] == r["id"]
                    )
                )
            rows[r["message_id"]] = Row(r["code"], r["effective"], values)
        return rows


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FuzzServer]:
    """The real app with small limits on a migrated SQLite database holding one patient."""
    url = f"sqlite:///{tmp_path / 'fuzz.db'}"

    async def prepare() -> str:
        database = Database(url)
        try:
            await migrate.upgrade(database)
            patient = await provisioning.create_patient(
                database, family="Fuzz", given="Ada", identifier="MRN-FUZZ"
            )
        finally:
            await database.dispose()
        return patient.id

    app = create_app(
        Settings(
            database_url=url,
            auto_migrate=False,
            max_body_bytes=MAX_BODY,
            max_batch_readings=MAX_READINGS,
            max_clock_skew_seconds=int(SKEW.total_seconds()),
        )
    )
    with asyncio.Runner() as runner:
        patient_id = runner.run(prepare())
        lifespan = app.router.lifespan_context(app)
        runner.run(lifespan.__aenter__())
        try:
            yield FuzzServer(runner, app, patient_id)
        finally:
            runner.run(lifespan.__aexit__(None, None, None))


# --- the oracle ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expected:
    """What should become of one reading: refused with `reason`, or stored as `row`."""

    reason: RejectReason | None = None
    message_id: str | None = None
    row: Row | None = None


def expected_outcome(item: Any, now: datetime) -> Expected:
    """Recompute, with the domain's own rules, what the pipeline must do with `item`."""
    try:
        raw = parse_item(item)
        measure = resolve_measure(raw.measure)
        values = validate_values(measure, raw)
        check_effective_time(raw.effective, now, SKEW)
        if raw.effective < ASSIGNED_SINCE:
            raise InvalidReading(RejectReason.NO_PATIENT, "before the device's assignment")
    except InvalidReading as error:
        return Expected(reason=error.reason)
    row = Row(
        measure.code,
        raw.effective.astimezone(UTC),
        tuple(sorted((v.code, v.value, v.unit) for v in values)),
    )
    return Expected(message_id=raw.message_id, row=row)


def readings_document(body: bytes) -> list[Any] | None:
    """The readings of `body` if it is a readings document the server must take item by item."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("readings"), list):
        return None
    readings: list[Any] = document["readings"]
    return readings if len(readings) <= MAX_READINGS else None


def assert_outcome(answer: Any, code: str) -> None:
    assert isinstance(answer, dict), answer
    assert answer["resourceType"] == "OperationOutcome"
    issue = answer["issue"][0]
    assert issue["severity"] == "error"
    assert issue["code"] == code
    assert isinstance(issue["diagnostics"], str) and issue["diagnostics"]


def check_exchange(body: bytes, sent: Exchange) -> list[Any] | None:
    """Every property of one request/answer pair; returns the readings when it was a 202."""
    assert sent.status < 500, (sent.status, sent.answer)
    event(f"HTTP {sent.status}")
    if len(body) > MAX_BODY:
        assert sent.status == 413, sent.answer
        assert_outcome(sent.answer, "too-costly")
        assert sent.rows == {}
        return None
    items = readings_document(body)
    if items is None:
        assert sent.status == 400, sent.answer
        assert_outcome(sent.answer, "invalid")
        assert sent.rows == {}
        assert sent.dead_letters == 1  # the refused body is kept for review
        return None
    assert sent.status == 202, sent.answer
    receipt = sent.answer
    assert set(receipt) - {"ignored_fields"} == {"accepted", "duplicates", "rejected"}
    assert receipt.get("ignored_fields", []) == _ignored(body)
    assert receipt["accepted"] + receipt["duplicates"] + len(receipt["rejected"]) == len(items)

    expected = [expected_outcome(item, sent.sent_at) for item in items]
    want_rejected = sorted(
        (i, e.reason.value) for i, e in enumerate(expected) if e.reason is not None
    )
    got_rejected = sorted((r["index"], r["reason"]) for r in receipt["rejected"])
    for reason in sorted({reason for _, reason in want_rejected}):
        event(f"refused: {reason}")
    assert got_rejected == want_rejected
    for rejection in receipt["rejected"]:
        item = items[rejection["index"]]
        if rejection["id"] is not None:
            assert isinstance(item, dict) and item.get("id") == rejection["id"]
        _assert_detail_does_not_quote_the_value(item, rejection)
    assert sent.dead_letters == len(want_rejected)

    first: dict[str, Row] = {}
    duplicates = 0
    for e in expected:
        if e.row is None:
            continue
        assert e.message_id is not None
        if e.message_id in first:
            duplicates += 1
        else:
            first[e.message_id] = e.row
    assert (receipt["accepted"], receipt["duplicates"]) == (len(first), duplicates)
    event("stored rows" if first else "nothing stored")
    assert sent.rows == first  # exactly the valid readings, each as its first occurrence
    return items


def _ignored(body: bytes) -> list[str]:
    """The receipt's ignored_fields: unread body fields, and reading fields as readings[].x."""
    document = orjson.loads(body)
    names = {key[:64] for key in document if key not in ("readings", "device")}
    for item in document["readings"]:
        if len(names) >= 20:
            break
        if isinstance(item, dict):
            known = ("id", "type", "time", "value", "unit")
            names |= {f"readings[].{key[:64]}" for key in item if key not in known}
    return sorted(names)[:20]


def _assert_detail_does_not_quote_the_value(item: Any, rejection: dict[str, Any]) -> None:
    if not isinstance(item, dict):
        return
    if rejection["reason"] == "unit-not-convertible":
        assert rejection["detail"].startswith("field 'unit' is not a unit of ")
        return  # names the field and the expected units, not the unit sent
    value = item.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if not math.isfinite(value) or abs(value) < 1_000_000:
        return  # small numbers may coincide with the range bounds the detail names
    for spelling in (str(value), f"{value:g}"):
        assert spelling not in rejection["detail"]


# --- strategies ---------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


def _spellings(quantity: Quantity) -> list[str]:
    """Units a device may validly use for a quantity: its canonical unit and the alternatives
    it declares (a conversion between two units, mmol/L and mg/dL say, is the quantity's own:
    glucose has it, potassium does not), each with its aliases."""
    ucum = {quantity.unit, *quantity.alt_units}
    return sorted(ucum) + sorted(alias for alias, code in UNIT_ALIASES.items() if code in ucum)


OFFSETS = [
    UTC,
    timezone(timedelta(hours=14)),
    timezone(timedelta(hours=-12)),
    timezone(timedelta(hours=5, minutes=30)),
    timezone(timedelta(hours=-3, minutes=-30)),
]
# Readings of the past: after the assignment began (in every offset), well before now.
PAST = st.datetimes(
    min_value=datetime(2020, 1, 2),
    max_value=(datetime.now(UTC) - timedelta(days=2)).replace(tzinfo=None),
    timezones=st.sampled_from(OFFSETS),
)


def _stamp(moment: datetime, zulu: bool) -> str:
    text = moment.isoformat()
    return text.replace("+00:00", "Z") if zulu else text


@st.composite
def canonical_values(draw: st.DrawFn, quantity: Quantity, integral: bool) -> float:
    if integral and math.ceil(quantity.low) <= math.floor(quantity.high):
        return draw(st.integers(math.ceil(quantity.low), math.floor(quantity.high)))
    # Keep clear of the bounds by far more than conversion round-off.
    margin = (quantity.high - quantity.low) * 1e-9
    return draw(st.floats(min_value=quantity.low + margin, max_value=quantity.high - margin))


@dataclass(frozen=True, slots=True)
class Pristine:
    """A reading that is valid by construction, and how it must be stored."""

    item: dict[str, Any]
    code: str
    effective: datetime
    values: dict[str, float] = field(default_factory=dict)  # component code → canonical value


@st.composite
def valid_readings(draw: st.DrawFn, message_id: str) -> Pristine:
    measure: Measure = draw(st.sampled_from(MEASURES))
    quantities = measure.components or ((measure.quantity,) if measure.quantity else ())
    unit = draw(st.sampled_from(_spellings(quantities[0])))
    device_ucum = UNIT_ALIASES.get(unit, unit)
    # Counts (steps) are whole numbers; a blood pressure's systolic is above its diastolic.
    whole = quantities[0].whole
    integral = device_ucum == quantities[0].unit and (whole or draw(st.booleans()))
    canonical = {q.code: draw(canonical_values(q, integral)) for q in quantities}
    if measure.is_panel:
        systolic, diastolic = (canonical[q.code] for q in quantities)
        assume(systolic - diastolic > 0.01)
    sent = {q.key: convert(canonical[q.code], q.unit, device_ucum) for q in quantities}
    if integral:
        sent = {k: int(v) for k, v in sent.items()}
    moment = draw(PAST)
    item = {
        "id": message_id,
        "type": draw(st.sampled_from([measure.key, measure.code, *measure.also_codes])),
        "time": _stamp(moment, zulu=draw(st.booleans())),
        "value": sent if measure.is_panel else next(iter(sent.values())),
        "unit": unit,
    }
    if draw(st.integers(0, 7)) == 0:
        item[draw(st.text(max_size=6).filter(lambda k: k not in FIELDS))] = draw(json_values)
    return Pristine(item, measure.code, moment.astimezone(UTC), canonical)


absurd_numbers = st.one_of(
    st.sampled_from(
        [0, -0.0, -1, 5e-324, 1e308, -1e308, 2**63, 2**64 + 1, -(2**63) - 1, 10**30, -(10**30)]
        + [math.nan, math.inf, -math.inf]  # these make the whole body invalid JSON
    ),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
)
nan_ish = st.sampled_from(
    ["NaN", "nan", "Infinity", "-Infinity", "inf", "72", "", "1e400", "0x48", "七十二", None]
)
weird_types = st.one_of(
    st.sampled_from(
        [
            "blood-alcohol",
            "HEART-RATE",
            "heart rate",
            "8867-4 ",
            "8480-6",
            "http://loinc.org|8867-4",
            "85354-9",
            "59408-5",
        ]
    ),
    st.text(max_size=20),
)
weird_units = st.one_of(
    st.sampled_from(
        ["", " ", "°C", "°F", "F", "C", "mmHg", "MG/DL", "kg ", "lbs", "%", "1", "{steps}", "bpm"]
        + ["/min", "mm[Hg]", "kPa", "g", "mmol/L", "Cel", "[degF]", "[lb_av]", "stone", "K"]
    ),
    st.text(max_size=12),
)
weird_times = st.one_of(
    st.sampled_from(
        [
            "2026-11-25T08:00:00",
            "2026-11-25",
            "0001-01-01T00:00:00+00:00",
            "0001-01-01T00:00:00+14:00",
            "0001-01-01T00:00:00-14:00",
            "9999-12-31T23:59:59.999999Z",
            "9999-12-31T23:59:59-14:00",
            "2019-12-31T23:59:59Z",
            "2020-01-01T00:00:00Z",
            "2020-01-01T00:00:00+01:00",
            "2026-02-30T00:00:00Z",
            "2026-11-25T08:00:00+24:00",
            "2026-11-25T08:00:00+23:59",
            "20261125T080000Z",
            "2026-W48-3T08:00Z",
            "2026-11-25 08:00:00Z",
            "2026-11-25T08:00:00.123456789Z",
            "garbage",
            "",
        ]
    ),
    st.text(max_size=30),
    # Ahead of the server clock by far more than the allowed skew.
    st.timedeltas(min_value=timedelta(hours=1), max_value=timedelta(days=365 * 1000)).map(
        lambda ahead: _stamp(datetime.now(UTC) + ahead, zulu=True)
    ),
    # Before the device was assigned to anyone.
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(2019, 12, 30), timezones=st.just(UTC)
    ).map(lambda moment: _stamp(moment, zulu=True)),
    PAST.map(lambda moment: moment.replace(tzinfo=None).isoformat()),  # naive
)
weird_panels = st.one_of(
    st.sampled_from(
        [
            {"systolic": 120},
            {"systolic": 120, "diastolic": 80, "pulse": 70},
            {"SYSTOLIC": 120, "diastolic": 80},
            {},
            {"systolic": "120", "diastolic": 80},
            {"systolic": True, "diastolic": 80},
            {"systolic": None, "diastolic": 80},
            {"systolic": 350, "diastolic": 80},
            [120, 80],
            "120/80",
        ]
    ),
    st.dictionaries(st.sampled_from(["systolic", "diastolic", "mean"]), absurd_numbers),
)
weird_ids = st.one_of(
    st.sampled_from(
        ["", " ", "\t", "x" * MAX_MESSAGE_ID_LENGTH, "x" * (MAX_MESSAGE_ID_LENGTH + 1)]
    ),
    json_values,
)


# Weighted so that every reason for refusal turns up, not only "malformed".
MUTATIONS = (
    ("drop", "retype", "id", "not-an-object", "nan-ish")
    + ("number", "type", "unit", "panel") * 2
    + ("time",) * 3
)


@st.composite
def mutated(draw: st.DrawFn, item: dict[str, Any]) -> Any:
    """`item` changed in a way that may (or by chance may not) make it invalid."""
    changed = dict(item)
    for _ in range(2 if draw(st.integers(0, 3)) == 0 else 1):
        kind = draw(st.sampled_from(MUTATIONS))
        match kind:
            case "drop":
                changed.pop(draw(st.sampled_from(FIELDS)), None)
            case "retype":
                changed[draw(st.sampled_from(FIELDS))] = draw(json_values)
            case "number":
                changed["value"] = draw(absurd_numbers)
            case "nan-ish":
                changed["value"] = draw(nan_ish)
            case "type":
                changed["type"] = draw(weird_types)
            case "unit":
                changed["unit"] = draw(weird_units)
            case "time":
                changed["time"] = draw(weird_times)
            case "panel":
                if draw(st.booleans()):
                    changed.update(type="blood-pressure", unit="mm[Hg]")
                changed["value"] = draw(weird_panels)
            case "id":
                changed["id"] = draw(weird_ids)
            case "not-an-object":
                return draw(json_values)
    return changed


@st.composite
def batches(draw: st.DrawFn) -> tuple[dict[str, Any], dict[int, Pristine]]:
    """A readings document mixing valid readings with mutated ones, and the valid ones."""
    prefix = draw(st.text(st.characters(exclude_categories=("C", "Z")), max_size=8))
    items: list[Any] = []
    pristine: dict[int, Pristine] = {}
    # Now and then more readings than a batch may hold.
    count = draw(
        st.integers(0, MAX_READINGS + 2)
        if draw(st.integers(0, 9)) == 0
        else st.integers(0, MAX_READINGS)
    )
    for i in range(count):
        valid = draw(valid_readings(f"{prefix}#{i}"))
        roll = draw(st.integers(0, 9))
        if roll < 4:
            pristine[i] = valid
            items.append(valid.item)
        elif roll == 4 and items:  # resend the id of an earlier reading
            earlier = draw(st.sampled_from(items))
            resent = dict(valid.item)
            resent["id"] = earlier.get("id") if isinstance(earlier, dict) else earlier
            items.append(resent)
        else:
            items.append(draw(mutated(valid.item)))
    document: dict[str, Any] = {"readings": items}
    if draw(st.integers(0, 9)) == 0:
        extra = draw(st.text(max_size=8).filter(lambda k: k not in ("readings", "device")))
        document[extra] = draw(json_values)
    return document, pristine


def encode(document: Any, ascii_only: bool) -> bytes:
    return json.dumps(document, ensure_ascii=ascii_only).encode()


# --- the properties -----------------------------------------------------------------------


@settings(FUZZ, max_examples=100)
@given(batch=batches(), ascii_only=st.booleans())
def test_mixed_batches_store_exactly_the_valid_readings(
    server: FuzzServer, batch: tuple[dict[str, Any], dict[int, Pristine]], ascii_only: bool
) -> None:
    document, pristine = batch
    body = encode(document, ascii_only)
    sent = server.post(body)
    items = check_exchange(body, sent)
    if items is None:
        return
    # Independently of the oracle: each reading valid by construction is stored as meant.
    for index, reading_ in pristine.items():
        message_id = reading_.item["id"]
        if any(isinstance(it, dict) and it.get("id") == message_id for it in items[:index]):
            continue  # an earlier reading took its id
        row = sent.rows[message_id]
        assert row.code == reading_.code
        assert row.effective == reading_.effective
        stored = {code: value for code, value, _ in row.values}
        assert stored.keys() == reading_.values.keys()
        for code, value in reading_.values.items():
            assert math.isclose(stored[code], value, rel_tol=1e-9, abs_tol=1e-4), code


def _no_device_claim(value: Any) -> bool:
    # A top-level `device` names the sender; generated values would never match it.
    return not (isinstance(value, dict) and "device" in value)


arbitrary_documents = st.one_of(
    json_values,
    st.fixed_dictionaries({"readings": st.lists(json_values, max_size=MAX_READINGS + 2)}),
    st.fixed_dictionaries(
        {
            "readings": st.lists(
                st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=4), json_values),
                max_size=MAX_READINGS + 2,
            )
        }
    ),
).filter(_no_device_claim)


@settings(FUZZ, max_examples=40)
@given(document=arbitrary_documents, ascii_only=st.booleans())
def test_arbitrary_json_is_answered_without_a_server_error(
    server: FuzzServer, document: Any, ascii_only: bool
) -> None:
    body = encode(document, ascii_only)
    check_exchange(body, server.post(body))


@st.composite
def corrupted_bodies(draw: st.DrawFn) -> bytes:
    document, _ = draw(batches())
    data = bytearray(encode(document, ascii_only=False))
    match draw(st.sampled_from(["truncate", "flip", "insert", "raw"])):
        case "truncate":
            del data[draw(st.integers(0, len(data))) :]
        case "flip" if data:
            at = draw(st.integers(0, len(data) - 1))
            data[at] ^= draw(st.integers(1, 255))
        case "insert":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        case _:
            return draw(st.binary(max_size=300))
    return bytes(data)


@settings(FUZZ, max_examples=30)
@given(body=corrupted_bodies())
def test_corrupted_bytes_are_answered_without_a_server_error(
    server: FuzzServer, body: bytes
) -> None:
    assume(_no_device_claim(_loads_or_none(body)))
    check_exchange(body, server.post(body))


def _loads_or_none(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


@settings(FUZZ, max_examples=15)
@given(size=st.integers(min_value=MAX_BODY - 20, max_value=MAX_BODY + 20))
def test_a_body_is_accepted_up_to_the_size_limit_and_refused_beyond_it(
    server: FuzzServer, size: int
) -> None:
    document = json.dumps({"readings": [reading("sized")]}).encode()
    body = document + b" " * (size - len(document))
    sent = server.post(body)
    check_exchange(body, sent)
    assert (sent.status == 202) is (size <= MAX_BODY)


def test_the_oracle_itself_tells_valid_from_invalid() -> None:
    # Guards the fuzz tests against an oracle that would agree with anything.
    now = datetime.now(UTC)
    good = expected_outcome(reading("ok", at=now - timedelta(days=1)), now)
    assert good.reason is None and good.row is not None and good.row.code == "8867-4"
    cases: list[tuple[dict[str, Any], RejectReason]] = [
        (reading("a", value=1000), RejectReason.IMPLAUSIBLE_VALUE),
        (reading("b", unit="kg"), RejectReason.UNIT_NOT_CONVERTIBLE),
        (reading("c", kind="x"), RejectReason.UNKNOWN_CODE),
        (reading("d", at=now + timedelta(hours=1)), RejectReason.FUTURE_TIMESTAMP),
        (reading("e", at=datetime(2019, 1, 1, tzinfo=UTC)), RejectReason.NO_PATIENT),
        (reading("f", value="72"), RejectReason.MALFORMED),
    ]
    for item, reason in cases:
        assert expected_outcome(item, now).reason is reason


# --- NUL characters on both backends ------------------------------------------------------
# PostgreSQL text cannot hold U+0000: a NUL in a message id or in a refused body once made the
# whole request fail with a 500, losing the valid readings sent with it.


async def _stored_message_ids(database: Database) -> set[str]:
    async with database.read() as conn:
        return set((await conn.execute(select(observations.c.message_id))).scalars())


async def test_a_message_id_with_a_nul_character_does_not_lose_the_batch(
    client: httpx.AsyncClient, world: World, database: Database
) -> None:
    batch = {"readings": [reading("plain"), reading("nul\u0000id")]}
    response = await client.post(URL, json=batch, headers=world.device_headers)
    assert response.status_code == 202
    receipt = response.json()
    assert receipt["accepted"] + len(receipt["rejected"]) == 2
    assert "plain" in await _stored_message_ids(database)


async def test_a_body_with_a_nul_byte_is_refused_as_malformed(
    client: httpx.AsyncClient, world: World
) -> None:
    response = await client.post(URL, content=b'{"readings": \x00}', headers=world.device_headers)
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"
