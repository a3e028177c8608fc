"""Whether a subscription's owner may still be notified of an event, decided when the event
happens: a revoked consent or token, or a care-team change, stops notifications at once."""

from __future__ import annotations

from datetime import UTC, datetime

from medmesh.access.audit.audit_writer import AuditWriter
from medmesh.access.audit.entries import AuditEntry
from medmesh.access.identity.bearer import principal_for_token_id
from medmesh.access.policy import decision as policy
from medmesh.access.policy.scopes import Interaction
from medmesh.events.model import ALERT, MESSAGE, READINGS, REFILL, Event
from medmesh.store.database import Database
from medmesh.store.subscriptions import StoredSubscription

# The resource type a subscriber must be allowed to search to hear of an event.
RESOURCE_OF = {
    READINGS: "Observation",
    ALERT: "Flag",
    REFILL: "MedicationRequest",
    MESSAGE: "Communication",
}


class SubscriberCheck:
    """Decides, and audits, each notification before it is queued."""

    def __init__(self, database: Database, audit: AuditWriter) -> None:
        self._database = database
        self._audit = audit

    async def __call__(self, subscription: StoredSubscription, event: Event) -> bool:
        if event.patient_id is None:
            return False
        resource_type = RESOURCE_OF.get(event.kind, "Observation")
        now = datetime.now(UTC)
        async with self._database.read() as conn:
            principal = await principal_for_token_id(conn, subscription.created_by)
            if principal is None:
                return False
            decision = await policy.decide(
                conn, principal, event.patient_id, resource_type, Interaction.SEARCH, now=now
            )
        permitted = decision.permitted and _within_categories(decision, event)
        await self._audit.record(
            AuditEntry(
                action="E",
                subtype="notify",
                outcome="0" if permitted else "4",
                actor_kind=principal.kind.value,
                actor_id=principal.id,
                actor_name=principal.name,
                organization_id=principal.organization_id,
                resource_type=resource_type,
                resource_id=f"Subscription/{subscription.id}",
                patient_id=event.patient_id,
                purpose=decision.purpose,
                basis=decision.basis,
                source=None,
            )
        )
        return permitted


def _within_categories(decision: policy.Decision, event: Event) -> bool:
    if decision.categories is None:
        return True
    if event.kind in (REFILL, MESSAGE):
        return False  # care data is in no category: a limited consent does not cover it
    if event.kind == ALERT:
        return decision.allows_category(policy.ALERTS_CATEGORY)
    if event.kind == READINGS:
        codes = event.data.get("codes")
        if not isinstance(codes, list):
            return False  # unknown contents: not within a limited consent
        categories = {policy.category_of_code(str(c)) for c in codes}
        return all(c is not None and decision.allows_category(c) for c in categories)
    return False
