"""Webhooks: FHIR rest-hook Subscriptions notified, signed, of the events they match, with
retries until delivered (docs/webhooks.md)."""
