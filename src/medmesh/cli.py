"""The `medmesh` command line: the root command and its sub-commands (in `commands/`)."""

from __future__ import annotations

import typer

from medmesh.commands import backup, server, users
from medmesh.commands.audit import audit_app
from medmesh.commands.clients import app as clients_app
from medmesh.commands.database import db_app
from medmesh.commands.device_certificates import add_certificate_commands, ca_app
from medmesh.commands.devices import broker_user, device_app
from medmesh.commands.erasure import add_erasure_commands
from medmesh.commands.keys import keys_app
from medmesh.commands.patients import care_team_app, patient_app
from medmesh.commands.sim import sim_app
from medmesh.commands.tokens import token_app

app = typer.Typer(help="medmesh: connected medical devices in, FHIR R4 out.", no_args_is_help=True)
app.command()(server.serve)
app.command()(server.demo)
app.command("ingest-worker")(server.ingest_worker)
app.command("dicom-worker")(server.dicom_worker)
app.command("broker-user")(broker_user)
app.command()(backup.backup)
app.command()(backup.restore)
app.add_typer(db_app, name="db")
app.add_typer(patient_app, name="patient")
app.add_typer(device_app, name="device")
app.add_typer(token_app, name="token")
app.add_typer(care_team_app, name="care-team")
app.add_typer(sim_app, name="sim")
app.add_typer(audit_app, name="audit")
app.add_typer(clients_app, name="client")
app.add_typer(users.user_app, name="user")
app.add_typer(users.org_app, name="org")
app.add_typer(keys_app, name="keys")
add_erasure_commands(patient_app)
add_certificate_commands(device_app)
app.add_typer(ca_app, name="ca")
