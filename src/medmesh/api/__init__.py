"""The JSON API (beside FHIR): events as Server-Sent Events, and what later issues add."""
