"""The FHIR R4 REST API: resources rendered from the store, search, Bundles, OperationOutcome."""
