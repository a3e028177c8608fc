"""What every HTTP route shares, below the packages that serve routes: FHIR OperationOutcome
responses and the error handler that maps medmesh's errors onto them, the error answers the
OpenAPI document declares, the middlewares (security headers, request size limits, rate
limits, the access log) and the dependencies routes declare (`deps.py`)."""
