# Two commands do everything on a fresh machine with Python 3.11+:
#   make demo   runs the platform (embedded SQLite) with simulated patients streaming in
#   make test   runs lint, format check, types and the whole test suite
PYTHON ?= python3
UV_VERSION = 0.13.9
UV = .uv/bin/uv
VENV = .venv
export UV_PYTHON_DOWNLOADS = never

.PHONY: demo serve test lint types pytest bench clean sbom sbom-check audit

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

demo: $(VENV)/.synced
	$(VENV)/bin/medmesh demo

serve: $(VENV)/.synced
	$(VENV)/bin/medmesh serve

lint: $(VENV)/.synced
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/lint-imports

types: $(VENV)/.synced
	$(VENV)/bin/mypy

# The suite runs on every core with pytest-xdist (`make pytest PYTEST_WORKERS=0` runs it in one
# process); a file's tests stay in one worker so its module fixtures are built once.
PYTEST_WORKERS ?= auto
pytest: $(VENV)/.synced
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=20

test: lint types pytest

bench: $(VENV)/.synced
	$(VENV)/bin/python benchmarks/ingest_and_search.py

# The CycloneDX SBOM of what medmesh ships (runtime dependencies of uv.lock, with hashes);
# sbom-check regenerates it and compares, ignoring its serial number and timestamp.
SBOM = docs/security/sbom.cdx.json
EXPORT_SBOM = $(UV) export --frozen --no-dev --format cyclonedx1.5 --preview-features sbom-export --quiet

sbom: $(VENV)/.synced
	$(EXPORT_SBOM) --output-file $(SBOM)

sbom-check: $(VENV)/.synced
	$(EXPORT_SBOM) --output-file .sbom-check.cdx.json
	$(VENV)/bin/python .ci/sbom_matches.py $(SBOM) .sbom-check.cdx.json; \
	  status=$$?; rm -f .sbom-check.cdx.json; exit $$status

# pip-audit over every locked dependency (runtime and dev), hashes required, nothing installed;
# fails when a known vulnerability has a fixed version (docs/security/patch-plan.md).
audit: $(VENV)/.synced
	$(UV) export --frozen --format requirements-txt --no-emit-project --quiet --output-file .audit-requirements.txt
	$(VENV)/bin/pip-audit --requirement .audit-requirements.txt --require-hashes --disable-pip \
	  --progress-spinner off --format json --output .audit-report.json; \
	  $(VENV)/bin/python .ci/audit_fixable.py .audit-report.json; \
	  status=$$?; rm -f .audit-requirements.txt .audit-report.json; exit $$status

clean:
	rm -rf .uv $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
