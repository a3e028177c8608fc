"""The rows about one patient, for erasure: hold flag, retention facts, deletion of every row
that holds or points at their data, and the stored erasure certificates. Audit rows are kept:
they hold ids only, and the law asks for them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Delete, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.errors import NotFound
from medmesh.store.database import cipher_of
from medmesh.store.exports import export_key_owner
from medmesh.store.schema import (
    alert_snoozes,
    alerts,
    api_tokens,
    appointments,
    break_glass,
    care_plans,
    care_team_members,
    caregiver_invitations,
    caregivers,
    consents,
    dead_letters,
    device_assignments,
    erasure_certificates,
    export_files,
    export_jobs,
    imaging_instances,
    imaging_series,
    imaging_studies,
    lab_result_details,
    medications,
    message_attachments,
    message_threads,
    messages,
    notification_outbox,
    notification_preferences,
    oauth_authorization_codes,
    oauth_refresh_tokens,
    observation_components,
    observation_rollups,
    observations,
    page_alerts,
    page_deliveries,
    pages,
    patient_identifiers,
    patient_merges,
    patients,
    pending_evaluation_patients,
    refill_requests,
    rule_state_segments,
    rule_states,
    time_entries,
    time_entry_revisions,
    users,
    visits,
    webhook_deliveries,
)


@dataclass(frozen=True, slots=True)
class StoredCertificate:
    id: str
    patient_id: str
    issued_at: datetime
    document: str
    signature: str


class PatientRecords:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def legal_hold(self, patient_id: str) -> bool:
        """The patient's legal-hold flag, read under a write lock on PostgreSQL, so it cannot
        be set between this check and the deletion in the same transaction.

        FOR UPDATE, the lock that conflicts with the key-share lock storing readings takes
        (store/observation_owners.py): a batch holding it is committed first and its readings
        are deleted with the rest; a batch after finds the patient gone."""
        query = select(patients.c.legal_hold).where(patients.c.id == patient_id).with_for_update()
        hold = (await self._conn.execute(query)).scalar_one_or_none()
        if hold is None:
            raise NotFound("Patient not found")
        return bool(hold)

    async def present(self, patient_ids: list[str]) -> list[str]:
        """Those of these patient ids that have a row in `patients`, sorted."""
        if not patient_ids:
            return []
        query = select(patients.c.id).where(patients.c.id.in_(patient_ids)).order_by(patients.c.id)
        return [str(pid) for pid in (await self._conn.execute(query)).scalars()]

    async def set_legal_hold(self, patient_id: str, on: bool) -> None:
        result = await self._conn.execute(
            update(patients).where(patients.c.id == patient_id).values(legal_hold=on)
        )
        if not result.rowcount:
            raise NotFound("Patient not found")

    async def newest_clinical_data(self, patient_id: str) -> datetime | None:
        """When the patient's newest reading was taken (None: no readings)."""
        query = select(func.max(observations.c.effective)).where(
            observations.c.patient_id == patient_id
        )
        newest: datetime | None = (await self._conn.execute(query)).scalar_one_or_none()
        return newest

    async def delete_all(self, patient_id: str) -> dict[str, int]:
        """Delete every row about the patient; returns rows deleted per table (zeros kept)."""
        counts: dict[str, int] = {}

        async def run(name: str, statement: Delete) -> None:
            result = await self._conn.execute(statement)
            counts[name] = counts.get(name, 0) + int(result.rowcount or 0)

        theirs = select(observations.c.id).where(observations.c.patient_id == patient_id)
        await run(
            "lab_result_details",
            delete(lab_result_details).where(lab_result_details.c.observation_id.in_(theirs)),
        )
        await run(
            "observation_components",
            delete(observation_components).where(
                observation_components.c.observation_id.in_(theirs)
            ),
        )
        await run(
            "observations", delete(observations).where(observations.c.patient_id == patient_id)
        )
        await self._delete_pages(patient_id, counts)
        await run(
            "observation_rollups",
            delete(observation_rollups).where(observation_rollups.c.patient_id == patient_id),
        )
        await run("alerts", delete(alerts).where(alerts.c.patient_id == patient_id))
        await run(
            "rule_state_segments",
            delete(rule_state_segments).where(rule_state_segments.c.patient_id == patient_id),
        )
        await run("rule_states", delete(rule_states).where(rule_states.c.patient_id == patient_id))
        await run(
            "pending_evaluation_patients",
            delete(pending_evaluation_patients).where(
                pending_evaluation_patients.c.patient_id == patient_id
            ),
        )
        await run("care_plans", delete(care_plans).where(care_plans.c.patient_id == patient_id))
        await run(
            "message_attachments",
            delete(message_attachments).where(message_attachments.c.patient_id == patient_id),
        )
        await run("messages", delete(messages).where(messages.c.patient_id == patient_id))
        await run(
            "message_threads",
            delete(message_threads).where(message_threads.c.patient_id == patient_id),
        )
        await run(
            "refill_requests",
            delete(refill_requests).where(refill_requests.c.patient_id == patient_id),
        )
        await run("medications", delete(medications).where(medications.c.patient_id == patient_id))
        for table in (time_entry_revisions, time_entries, visits):  # visits before appointments
            await run(table.name, delete(table).where(table.c.patient_id == patient_id))
        await run(
            "imaging_instances",
            delete(imaging_instances).where(imaging_instances.c.patient_id == patient_id),
        )
        await run(
            "imaging_series",
            delete(imaging_series).where(imaging_series.c.patient_id == patient_id),
        )
        await run(
            "imaging_studies",
            delete(imaging_studies).where(imaging_studies.c.patient_id == patient_id),
        )
        await run(
            "appointments", delete(appointments).where(appointments.c.patient_id == patient_id)
        )
        # The caregivers' links and invitations (their own accounts stay: they are not the
        # patient's), then the consents naming them with the others.
        await run("caregivers", delete(caregivers).where(caregivers.c.patient_id == patient_id))
        await run(
            "caregiver_invitations",
            delete(caregiver_invitations).where(caregiver_invitations.c.patient_id == patient_id),
        )
        await run("consents", delete(consents).where(consents.c.patient_id == patient_id))
        await run(
            "care_team_members",
            delete(care_team_members).where(care_team_members.c.patient_id == patient_id),
        )
        await run("break_glass", delete(break_glass).where(break_glass.c.patient_id == patient_id))
        accounts = select(users.c.id).where(users.c.patient_id == patient_id)
        await run(
            "api_tokens",
            delete(api_tokens).where(
                or_(api_tokens.c.patient_id == patient_id, api_tokens.c.user_id.in_(accounts))
            ),
        )
        for name, table in (
            ("oauth_authorization_codes", oauth_authorization_codes),
            ("oauth_refresh_tokens", oauth_refresh_tokens),
        ):
            await run(
                name,
                delete(table).where(
                    or_(table.c.patient_id == patient_id, table.c.user_id.in_(accounts))
                ),
            )
        await run(
            "notification_outbox",
            delete(notification_outbox).where(notification_outbox.c.user_id.in_(accounts)),
        )
        await run(
            "notification_preferences",
            delete(notification_preferences).where(
                notification_preferences.c.user_id.in_(accounts)
            ),
        )
        await run("users", delete(users).where(users.c.patient_id == patient_id))
        await self._delete_dead_letters(patient_id, counts)
        await run(
            "device_assignments",
            delete(device_assignments).where(device_assignments.c.patient_id == patient_id),
        )
        await self._delete_exports(patient_id, counts)
        await self._delete_webhook_deliveries(patient_id, counts)
        await run(
            "patient_merges",
            delete(patient_merges).where(
                (patient_merges.c.survivor_id == patient_id)
                | (patient_merges.c.merged_id == patient_id)
            ),
        )
        # A record merged into this one keeps its own rows; it no longer points here.
        await self._conn.execute(
            update(patients).where(patients.c.merged_into == patient_id).values(merged_into=None)
        )
        await run(
            "patient_identifiers",
            delete(patient_identifiers).where(patient_identifiers.c.patient_id == patient_id),
        )
        await run("patients", delete(patients).where(patients.c.id == patient_id))
        return counts

    async def _delete_pages(self, patient_id: str, counts: dict[str, int]) -> None:
        """Snoozes of the patient's alerts, their links to pages, and the pages (with their
        deliveries) left announcing nothing else."""
        affected = [
            r.page_id
            for r in await self._conn.execute(
                select(page_alerts.c.page_id).where(page_alerts.c.patient_id == patient_id)
            )
        ]
        for name, statement in (
            (
                "alert_snoozes",
                delete(alert_snoozes).where(alert_snoozes.c.patient_id == patient_id),
            ),
            ("page_alerts", delete(page_alerts).where(page_alerts.c.patient_id == patient_id)),
        ):
            counts[name] = int((await self._conn.execute(statement)).rowcount or 0)
        still_used = select(page_alerts.c.page_id).where(page_alerts.c.page_id.in_(affected))
        empty = select(pages.c.id).where(pages.c.id.in_(affected), pages.c.id.not_in(still_used))
        empty_ids = [r.id for r in await self._conn.execute(empty)]
        deliveries = delete(page_deliveries).where(page_deliveries.c.page_id.in_(empty_ids))
        counts["page_deliveries"] = int((await self._conn.execute(deliveries)).rowcount or 0)
        gone = delete(pages).where(pages.c.id.in_(empty_ids))
        counts["pages"] = int((await self._conn.execute(gone)).rowcount or 0)

    async def _delete_dead_letters(self, patient_id: str, counts: dict[str, int]) -> None:
        """Refused input from the patient's devices while assigned to them (their readings)."""
        windows = (
            await self._conn.execute(
                select(
                    device_assignments.c.device_id,
                    device_assignments.c.start,
                    device_assignments.c.end,
                ).where(device_assignments.c.patient_id == patient_id)
            )
        ).all()
        total = 0
        for device_id, start, end in windows:
            condition = and_(
                dead_letters.c.device_id == device_id, dead_letters.c.received_at >= start
            )
            if end is not None:
                condition = and_(condition, dead_letters.c.received_at < end)
            result = await self._conn.execute(delete(dead_letters).where(condition))
            total += int(result.rowcount or 0)
        counts["dead_letters"] = total

    async def _delete_exports(self, patient_id: str, counts: dict[str, int]) -> None:
        """Bulk exports that include the patient (their files hold the patient's data)."""
        rows = await self._conn.execute(select(export_jobs.c.id, export_jobs.c.patient_ids))
        jobs = [job for job, ids in rows if patient_id in json.loads(ids or "[]")]
        counts["export_files"] = counts["export_jobs"] = 0
        if jobs:
            files = await self._conn.execute(
                delete(export_files).where(export_files.c.job_id.in_(jobs))
            )
            done = await self._conn.execute(delete(export_jobs).where(export_jobs.c.id.in_(jobs)))
            for job in jobs:  # their files' keys too: copies of the files become unreadable
                await cipher_of(self._conn).destroy(export_key_owner(job))
            counts["export_files"] = int(files.rowcount or 0)
            counts["export_jobs"] = int(done.rowcount or 0)

    async def _delete_webhook_deliveries(self, patient_id: str, counts: dict[str, int]) -> None:
        """Webhook notifications about the patient (sealed with their key, deleted all the
        same)."""
        result = await self._conn.execute(
            delete(webhook_deliveries).where(webhook_deliveries.c.patient_id == patient_id)
        )
        counts["webhook_deliveries"] = int(result.rowcount or 0)

    async def add_certificate(self, certificate: StoredCertificate) -> None:
        await self._conn.execute(
            erasure_certificates.insert().values(
                id=certificate.id,
                patient_id=certificate.patient_id,
                issued_at=certificate.issued_at,
                document=certificate.document,
                signature=certificate.signature,
            )
        )

    async def certificate(self, certificate_id: str) -> StoredCertificate:
        query = select(erasure_certificates).where(erasure_certificates.c.id == certificate_id)
        row = (await self._conn.execute(query)).mappings().first()
        if row is None:
            raise NotFound("Erasure certificate not found")
        return StoredCertificate(
            row["id"], row["patient_id"], row["issued_at"], row["document"], row["signature"]
        )
