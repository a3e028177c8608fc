"""The RPM report as a biller files it: CSV (one row per patient) and PDF (fpdf2)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence

from medmesh.care.rpm_report import PatientPeriod
from medmesh.care.rpm_rules import RpmCodes

CSV_COLUMNS = (
    "patient_id",
    "patient",
    "period_start",
    "period_end",
    "enrolled",
    "days_with_data",
    "setup_education",
    "management_minutes",
    "interactive_communication",
    "billable_codes",
)


def _codes(row: PatientPeriod) -> str:
    return " ".join(f"{code}x{units}" if units > 1 else code for code, units in row.billing.codes)


def _fields(row: PatientPeriod, name: str) -> list[str]:
    return [
        row.patient_id,
        name,
        row.period.first_day.isoformat(),
        row.period.last_day.isoformat(),
        row.enrolled.isoformat() if row.enrolled else "",
        str(len(row.days)),
        row.setup_on.isoformat() if row.setup_on else "",
        str(row.minutes),
        "yes" if row.interactive else "no",
        _codes(row),
    ]


def csv_text(rows: Sequence[PatientPeriod], names: Mapping[str, str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(_fields(row, names.get(row.patient_id, "")))
    return out.getvalue()


def pdf_bytes(rows: Sequence[PatientPeriod], names: Mapping[str, str], codes: RpmCodes) -> bytes:
    # Imported here, not at the top: fpdf2 (with fontTools) takes ~0.8 s to import, which every
    # `medmesh` process (server, workers, each CLI command) paid at start for a report that is
    # rarely asked for (docs/benchmarks.md, "Starting a process").
    from fpdf import FPDF

    pdf = FPDF(orientation="portrait", format="A4")
    pdf.set_title("Remote physiologic monitoring report")
    pdf.set_creator("medmesh")
    for row in rows:
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 15)
        pdf.cell(0, 10, "Remote physiologic monitoring report", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 10)
        lines = [
            f"Patient: {names.get(row.patient_id, '')} ({row.patient_id})",
            f"Period: {row.period.first_day.isoformat()} to {row.period.last_day.isoformat()}"
            f" ({row.period.zone})",
            f"Enrolled: {row.enrolled.isoformat() if row.enrolled else 'no device assigned'}",
            f"Days with device data: {len(row.days)}",
            "Device set-up and education: "
            + (row.setup_on.isoformat() if row.setup_on else "not in this period"),
            f"Treatment management: {row.minutes} minutes"
            f"{'' if row.interactive else ' (no real-time interactive communication)'}",
            f"Billable codes: {_codes(row) or 'none'}",
            f"Rules: {codes.name}",
        ]
        for line in lines:
            pdf.multi_cell(0, 6, line, new_x="LMARGIN", new_y="NEXT")
        if row.entries:
            pdf.ln(3)
            pdf.set_font("Helvetica", "B", 10)
            pdf.cell(0, 6, "Clinician time", new_x="LMARGIN", new_y="NEXT")
            pdf.set_font("Helvetica", "", 9)
            for entry in row.entries:
                minutes = int(entry.duration.total_seconds() // 60)
                pdf.multi_cell(
                    0,
                    5,
                    f"{entry.start.isoformat(timespec='minutes')}  {minutes} min  "
                    f"{entry.kind.value}  {entry.clinician_name}"
                    f"{'  interactive' if entry.interactive else ''}",
                    new_x="LMARGIN",
                    new_y="NEXT",
                )
    if not rows:
        pdf.add_page()
        pdf.set_font("Helvetica", "", 11)
        pdf.cell(0, 10, "No patients in this report.")
    return bytes(pdf.output())
