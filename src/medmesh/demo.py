"""`medmesh demo`: the platform on the embedded default with simulated patients streaming in."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

import httpx
import uvicorn
from sqlalchemy.engine import make_url

from medmesh import provisioning, wiring
from medmesh.access.identity import totp
from medmesh.access.identity.principals import ActorKind, Principal, Role
from medmesh.access.policy.scopes import Scopes
from medmesh.app import create_app
from medmesh.care import caregivers
from medmesh.care.appointments import book, new_schedule
from medmesh.care.medications import new_medication, prescribe
from medmesh.care.messages import start_thread
from medmesh.config import Settings
from medmesh.demo_visits import demo_visit_and_time
from medmesh.domain.appointments import WEEKDAYS, VisitKind
from medmesh.domain.errors import MedmeshError
from medmesh.domain.messages import MessageCategory, Side
from medmesh.events.bus import InProcessBus
from medmesh.imaging.archive import ImagingArchive
from medmesh.imaging.synthetic import mr_series
from medmesh.ingest.mllp import MllpServer
from medmesh.ingest.pipeline import IngestPipeline
from medmesh.paging.channels import ChannelKind
from medmesh.paging.repository import Channels, Rosters
from medmesh.paging.rosters import Shift, ShiftKind, Team
from medmesh.services import build_database
from medmesh.sim.http_device import HttpDevice
from medmesh.sim.models import PatientModel, demo_patients
from medmesh.sim.mqtt_device import MqttDevice, MqttDeviceSettings
from medmesh.store import migrate
from medmesh.store.appointments import Schedules
from medmesh.store.database import Database
from medmesh.store.messages import Messages
from medmesh.store.registry import Devices, Patients
from medmesh.store.users import Users

DEMO_SYSTEM = "urn:medmesh:demo"
DEMO_CLINICIAN = "demo-clinician"
BACKFILL = timedelta(hours=1)
DEMO_CLINICIAN = "demo.clinician"


@dataclass(frozen=True, slots=True)
class DemoSubject:
    simulated: PatientModel
    patient_id: str
    device_id: str
    device_secret: str


async def _clinician_token(database: Database, patient_ids: list[str]) -> str:
    """Put the demo clinician on the demo patients' care team (what lets them see the records)
    and give them a fresh one-day API token (user/*.rs)."""
    async with database.read() as conn:
        account = await Users(conn).find_by_username(DEMO_CLINICIAN)
    assert account is not None  # made by _provision_clinician
    for patient_id in patient_ids:
        await provisioning.add_to_care_team(
            database, patient_id, account.id, role="primary", added_by="demo"
        )
    return await provisioning.issue_user_token(
        database, user_id=account.id, scopes="user/*.rs", lifetime=timedelta(days=1)
    )


async def _provision(database: Database, simulated: PatientModel) -> DemoSubject:
    """Create (once) the demo patient and their device; give the device a fresh secret."""
    async with database.read() as conn:
        patient = await Patients(conn).find_by_identifier(DEMO_SYSTEM, simulated.name)
    if patient is None:
        patient = await provisioning.create_patient(
            database,
            family=simulated.name.replace("-", " ").title(),
            given="Demo",
            identifier=simulated.name,
            identifier_system=DEMO_SYSTEM,
        )
    async with database.read() as conn:
        devices = await Devices(conn).search(patient_id=patient.id, limit=1)
    if devices:
        credential = await provisioning.rotate_device_secret(database, devices[0].id)
    else:
        credential = await provisioning.register_device(
            database,
            display_name=f"Demo monitor ({simulated.name})",
            manufacturer="medmesh sim",
            device_type="706172005",  # SNOMED CT: physiologic monitoring system
        )
        await provisioning.assign_device(
            database, credential.device_id, patient.id, datetime.now(UTC) - 2 * BACKFILL
        )
    return DemoSubject(simulated, patient.id, credential.device_id, credential.secret)


async def _laboratory_results(database: Database, subject: DemoSubject) -> None:
    """A basic metabolic panel and a blood count from the hospital laboratory, over HL7 v2
    ORU^R01 with LOINC codes (docs/hl7.md), so lab results show next to the vitals; the blood
    count's codes are outside medmesh's vocabulary, as most of a real laboratory's are."""
    async with database.read() as conn:
        registered = await Devices(conn).find_by_serial_number("DEMO-LAB")
    if registered is None:
        await provisioning.register_device(
            database, display_name="Hospital laboratory", serial_number="DEMO-LAB",
            shared_monitor=True,
        )  # fmt: skip
    taken = (datetime.now(UTC) - timedelta(minutes=30)).strftime("%Y%m%d%H%M%S+0000")
    message = "\r".join(
        [
            f"MSH|^~\\&|DEMO-LAB|HOSPITAL|medmesh|RPM|{taken}||ORU^R01^ORU_R01|"
            f"DEMO-LAB-{subject.simulated.name}|P|2.5.1",
            f"PID|1||{subject.simulated.name}^^^{DEMO_SYSTEM}^MR",
            f"OBR|1|||24323-8^Comprehensive metabolic panel^LN|||{taken}",
            f"OBX|1|NM|2823-3^Potassium^LN||4.2|mmol/L^^UCUM|3.5-5.1|N|||F|||{taken}",
            f"OBX|2|NM|2951-2^Sodium^LN||138|mmol/L^^UCUM|136-145|N|||F|||{taken}",
            f"OBX|3|NM|2345-7^Glucose^LN||131|mg/dL^^UCUM|70-99|H|||F|||{taken}",
            f"OBX|4|NM|2160-0^Creatinine^LN||0.9|mg/dL^^UCUM|0.6-1.2|N|||F|||{taken}",
            f"OBX|5|SN|33914-3^eGFR^LN||>^60|mL/min/{{1.73_m2}}^^UCUM|>60|N|||F|||{taken}",
        ]
    )
    blood_count = "\r".join(
        [
            f"MSH|^~\\&|DEMO-LAB|HOSPITAL|medmesh|RPM|{taken}||ORU^R01^ORU_R01|"
            f"DEMO-CBC-{subject.simulated.name}|P|2.5.1",
            f"PID|1||{subject.simulated.name}^^^{DEMO_SYSTEM}^MR",
            f"OBR|1|||58410-2^CBC panel - Blood by Automated count^LN|||{taken}",
            f"OBX|1|NM|6690-2^Leukocytes^LN||11.2|10*3/uL^^UCUM|4.0-10.5|H|||F|||{taken}",
            f"OBX|2|NM|718-7^Hemoglobin^LN||13.6|g/dL^^UCUM|12.0-16.0|N|||F|||{taken}",
            f"OBX|3|NM|4544-3^Hematocrit^LN||40.8|%^^UCUM|36.0-46.0|N|||F|||{taken}",
            f"OBX|4|NM|777-3^Platelets^LN||231|10*3/uL^^UCUM|150-400|N|||F|||{taken}",
        ]
    )
    server = MllpServer(database, IngestPipeline(database))
    for text in (message, blood_count):
        await server.answer(text.encode())


async def _care_between_visits(database: Database, patient_id: str) -> None:
    """Once per demo patient: a message from the demo clinician, a medication, the clinician's
    weekly hours and a video visit tomorrow, so the portal and the inbox have something."""
    async with database.read() as conn:
        account = await Users(conn).find_by_username(DEMO_CLINICIAN)
        if account is None or await Messages(conn).threads(patient_id, Side.PATIENT):
            return
    clinician = Principal(
        kind=ActorKind.USER,
        id=account.id,
        name=account.display_name,
        role=Role.CLINICIAN,
        organization_id=account.organization_id,
        scopes=Scopes.parse("user/*.cruds"),
    )
    now = datetime.now(UTC)
    bus = InProcessBus()  # nobody listens yet: the server starts after this
    await start_thread(
        database,
        bus,
        patient_id=patient_id,
        sender=clinician,
        subject="Welcome",
        category=MessageCategory.GENERAL,
        body="Write to us here between visits. For an emergency, call the emergency number.",
        attachments=[],
        at=now,
    )
    medication = new_medication(
        patient_id=patient_id,
        prescriber=clinician,
        name="Lisinopril 10 mg tablet",
        rxnorm="314076",
        dosage="1 tablet by mouth once a day",
        refills=2,
        at=now,
    )
    await prescribe(database, medication)
    hours = [(day, "08:00", "18:00") for day in WEEKDAYS]
    schedule = new_schedule(
        clinician=clinician,
        timezone="UTC",
        slot_minutes=30,
        kinds=["in-person", "video"],
        hours=hours,
        book_ahead_days=30,
        cancel_hours=24,
        at=now,
    )
    async with database.write() as conn:
        await Schedules(conn).put(schedule)
        stored = await Schedules(conn).of_clinician(clinician.id)
    assert stored is not None
    tomorrow = (now + timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
    with contextlib.suppress(MedmeshError):  # taken by another demo patient: fine
        await book(
            database,
            bus,
            schedule=stored,
            patient_id=patient_id,
            start=tomorrow + timedelta(minutes=30 * (sum(map(ord, patient_id)) % 12)),
            kind=VisitKind.VIDEO,
            reason=None,
            by=clinician,
            now=now,
        )


@dataclass(frozen=True, slots=True)
class DemoClinician:
    username: str
    password: str
    totp_secret: str


async def _demo_imaging(database: Database, subject: DemoSubject) -> None:
    """An MRI head series (synthetic, with a proper header) for the first demo patient, filed
    as a modality's C-STORE would be; the same series again stores nothing new."""
    archive = ImagingArchive(database)
    for content in mr_series(
        patient_id=subject.simulated.name,
        issuer=DEMO_SYSTEM,
        patient_name=f"{subject.simulated.name.replace('-', ' ').title()}^Demo",
    ):
        await archive.receive(content, "MEDMESH_SIM@demo")


async def _provision_clinician(database: Database) -> DemoClinician:
    """The demo's clinician account, with a new password and TOTP key each run (printed: the
    demo runs on loopback for one person)."""
    password = secrets.token_urlsafe(12)
    secret = totp.new_secret()
    async with database.read() as conn:
        existing = await Users(conn).find_by_username(DEMO_CLINICIAN)
    if existing is None:
        await provisioning.create_user(
            database,
            username=DEMO_CLINICIAN,
            display_name="Dr Demo Clinician",
            role=Role.CLINICIAN,
            password=password,
        )
    else:
        await provisioning.reset_password(database, DEMO_CLINICIAN, password)
        await provisioning.set_disabled(database, DEMO_CLINICIAN, disabled=False)
    await provisioning.activate_totp(database, DEMO_CLINICIAN, secret)
    return DemoClinician(DEMO_CLINICIAN, password, secret)


DEMO_PAGING_ADDRESS = "demo.clinician@example.org"


async def _paging(database: Database) -> None:
    """An on-call team covered round the clock by the demo clinician (its lead too), and an
    e-mail paging channel for them (pages go out when MEDMESH_SMTP_HOST is set)."""
    async with database.write() as conn:
        account = await Users(conn).find_by_username(DEMO_CLINICIAN)
        assert account is not None
        rosters = Rosters(conn)
        if await rosters.team(account.organization_id, "Demo on call") is None:
            shifts = tuple(
                Shift(account.id, ShiftKind.WEEKLY, day, time(0), time(0)) for day in range(7)
            )
            team = Team(
                "", account.organization_id, "Demo on call", "UTC", account.id, None, shifts
            )
            await rosters.save(team, account.id, datetime.now(UTC))
        channels = Channels(conn)
        if not await channels.of(account.id):
            await channels.add(
                account.id, ChannelKind.EMAIL, DEMO_PAGING_ADDRESS, "demo", datetime.now(UTC)
            )


async def _stream_http(base_url: str, subject: DemoSubject, interval: float) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        device = HttpDevice(client, subject.device_secret)
        # An hour of history first; message ids come from sample times, so a restarted demo
        # resends without duplicating.
        since = datetime.now(UTC) - BACKFILL
        while True:
            now = datetime.now(UTC)
            readings = subject.simulated.readings_between(since, now)
            for start in range(0, len(readings), 500):
                await device.send_body(subject.simulated.encode(readings[start : start + 500]))
            since = now
            await asyncio.sleep(interval)


async def _stream_mqtt(settings: Settings, subject: DemoSubject, interval: float) -> None:
    """Publish as the device would. The broker must accept the device: an anonymous broker
    (the machine's default) does; with the shipped ACL, give the device broker credentials."""
    device_settings = MqttDeviceSettings(
        device_id=subject.device_id,
        host=settings.mqtt_host or "127.0.0.1",
        port=settings.mqtt_port,
        ca_file=settings.mqtt_ca_file,
        status_every=30.0,
    )
    async with MqttDevice(device_settings) as device:
        await device.stream(subject.simulated, interval=interval, backfill=BACKFILL)


DEMO_APP_PORT = 9100


async def _register_demo_app(database: Database) -> str:
    """A SMART browser app (public client) for the sample page in tests/e2e/smart_app/."""
    return await provisioning.register_app_client(
        database,
        name="medmesh demo SMART app",
        redirect_uris=[f"http://127.0.0.1:{DEMO_APP_PORT}/index.html"],
        scopes="patient/*.rs user/*.rs",
    )


DEMO_CAREGIVER = "demo.caregiver"
DEMO_CAREGIVER_ADDRESS = "demo.caregiver@example.org"


async def _demo_caregiver(database: Database, patient_id: str) -> DemoClinician:
    """A caregiver of the first demo patient (docs/paging.md#caregivers), invited and accepted
    as a patient and caregiver would: vital signs and alerts shared, paged for critical
    alerts at an e-mail address. A new password and TOTP key each run, like the clinician."""
    password = secrets.token_urlsafe(12)
    secret = totp.new_secret()
    async with database.read() as conn:
        existing = await Users(conn).find_by_username(DEMO_CAREGIVER)
    if existing is None:
        now = datetime.now(UTC)
        invited = await caregivers.invite(
            database,
            patient_id=patient_id,
            by="demo",
            categories={"vital-signs", "alerts"},
            alert_types={"critical"},
            now=now,
        )
        accepted = await caregivers.accept(
            database,
            code=invited.code,
            username=DEMO_CAREGIVER,
            display_name="Demo Caregiver",
            password=password,
            now=now,
        )
        async with database.write() as conn:
            await Channels(conn).add(
                accepted.user_id, ChannelKind.EMAIL, DEMO_CAREGIVER_ADDRESS, "demo", now
            )
    else:
        await provisioning.reset_password(database, DEMO_CAREGIVER, password)
    await provisioning.activate_totp(database, DEMO_CAREGIVER, secret)
    return DemoClinician(DEMO_CAREGIVER, password, secret)


async def run_demo(
    settings: Settings, *, patients: int, interval: float, garbage: float = 0.02
) -> None:
    database = build_database(settings)
    await migrate.upgrade(database)
    models = demo_patients(garbage=garbage)
    chosen = models[:patients] + [m for m in models if m.name == "faulty-device"]
    subjects = [await _provision(database, m) for m in chosen]
    clinician = await _provision_clinician(database)
    token = await _clinician_token(database, [s.patient_id for s in subjects])
    await _paging(database)
    for subject in subjects:
        await _care_between_visits(database, subject.patient_id)
        await _laboratory_results(database, subject)
    await _demo_imaging(database, subjects[0])
    caregiver = await _demo_caregiver(database, subjects[0].patient_id)
    smart_app = await _register_demo_app(database)
    visit = await demo_visit_and_time(database, subjects[0].patient_id, DEMO_CLINICIAN)
    await database.dispose()

    settings = settings.bound_to(settings.host)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
            **settings.proxy_options(),
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving  # surfaces the start-up error (e.g. port in use)
            return
        await asyncio.sleep(0.05)
    base_url = f"http://{settings.host}:{settings.port}"
    where = make_url(database.url).render_as_string(hide_password=True)
    print(f"medmesh is listening on {base_url} (database: {where})")
    print(f"  dashboard:  {base_url}/   (sign in as the demo clinician:)")
    print(f"    username {clinician.username}   password {clinician.password}")
    print(
        f"    code: add the key {clinician.totp_secret} to an authenticator app (time-based, "
        "6 digits), or print the current code with"
    )
    print(
        f"    .venv/bin/python -c \"import pyotp; print(pyotp.TOTP('{clinician.totp_secret}')"
        '.now())"'
    )
    print(
        f"  care:       {base_url}/inbox   calendar {base_url}/inbox/calendar   hours "
        f"{base_url}/inbox/schedule   (a patient's page shows their messages and medicines)"
    )
    print(
        f"  caregiver of the first patient: {base_url}/caregiving   username "
        f"{caregiver.username}   password {caregiver.password}   TOTP key "
        f"{caregiver.totp_secret}"
    )
    print(f"  FHIR API:   {base_url}/fhir/metadata   API docs: {base_url}/docs")
    if visit is not None:
        print(f"  video visit (open now): {base_url}/visits/{visit}")
    print(f"  RPM program, last month: {base_url}/api/v1/rpm/program?format=pdf&month=<YYYY-MM>")
    print(f"  API token of the demo clinician (new for this run): {token}")
    print(
        f"  try: curl -H 'Authorization: Bearer {token}' "
        f"'{base_url}/fhir/Observation?patient={subjects[0].patient_id}&_sort=-date&_count=5'"
    )
    iss = settings.public_base_url.rstrip("/") + "/fhir"
    print(f"  SMART app (App Launch, PKCE): client_id {smart_app}; serve the sample app with")
    print(f"    python3 -m http.server {DEMO_APP_PORT} --bind 127.0.0.1 -d tests/e2e/smart_app")
    print(
        f"    and open http://127.0.0.1:{DEMO_APP_PORT}/index.html?iss={iss}#client_id={smart_app}"
    )
    print("    (sign in as the demo clinician, pick a patient, allow; see docs/oauth.md)")
    print(
        "  a FHIR gateway writes: curl -X POST -H 'Content-Type: application/fhir+json' "
        f"-H 'Authorization: Bearer {subjects[0].device_secret}' {base_url}/fhir/Observation "
        "-d @observation.json   (docs/fhir-api.md, Writing)"
    )
    print(
        f"  US Core:  curl -H 'Authorization: Bearer {token}' "
        f"'{base_url}/fhir/Observation/$lastn?patient={subjects[0].patient_id}"
        "&category=vital-signs'"
    )
    if wiring.mqtt_settings(settings) is not None:
        transport = f"MQTT via {settings.mqtt_host}:{settings.mqtt_port}"
        streams = [asyncio.create_task(_stream_mqtt(settings, s, interval)) for s in subjects]
    else:
        transport = "HTTP (set MEDMESH_MQTT_HOST to stream over MQTT)"
        streams = [asyncio.create_task(_stream_http(base_url, s, interval)) for s in subjects]
    print(
        f"  streaming {len(subjects)} simulated devices every {interval:g} s over {transport};"
        " Ctrl-C stops."
    )
    try:
        await serving
    finally:
        for task in streams:
            task.cancel()
        for task in streams:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
