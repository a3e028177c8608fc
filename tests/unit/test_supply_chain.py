"""The regulator's pack stays true to the lock file: the checked-in SBOM lists exactly the
packages medmesh ships (at their locked versions), the SBOM comparison of `make sbom-check`
notices a drift, and the audit gate of `make audit` fails on a fixable vulnerability and on an
audit that could check nothing (docs/security/patch-plan.md)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SBOM = ROOT / "docs" / "security" / "sbom.cdx.json"


def _shipped_packages() -> dict[str, str]:
    """name -> version of every package medmesh needs at run time, from uv.lock (extras
    followed, the dev group left out)."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages = {p["name"]: p for p in lock["package"]}
    seen: set[tuple[str, tuple[str, ...]]] = set()

    def visit(name: str, extras: tuple[str, ...]) -> None:
        if (name, extras) in seen:
            return
        seen.add((name, extras))
        package = packages[name]
        needs: list[dict[str, Any]] = list(package.get("dependencies", []))
        for extra in extras:
            needs += package.get("optional-dependencies", {}).get(extra, [])
        for need in needs:
            visit(need["name"], tuple(sorted(need.get("extra", ()))))

    visit("medmesh", ())
    return {name: packages[name]["version"] for name, _ in seen if name != "medmesh"}


def test_the_sbom_lists_exactly_the_shipped_packages_at_their_locked_versions() -> None:
    sbom = json.loads(SBOM.read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    listed = {c["name"]: c["version"] for c in sbom["components"]}
    assert listed == _shipped_packages()
    for component in sbom["components"]:
        assert component["purl"] == f"pkg:pypi/{component['name']}@{component['version']}"
    assert "pytest" not in listed and "pip-audit" not in listed  # dev tools are not shipped


def _run(script: str, *args: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / ".ci" / script), *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_sbom_check_ignores_serial_and_time_but_not_a_changed_component(
    tmp_path: Path,
) -> None:
    sbom = json.loads(SBOM.read_text())
    sbom["serialNumber"] = "urn:uuid:00000000-0000-0000-0000-000000000000"
    sbom["metadata"]["timestamp"] = "2000-01-01T00:00:00Z"
    regenerated = tmp_path / "regenerated.json"
    regenerated.write_text(json.dumps(sbom))
    assert _run("sbom_matches.py", SBOM, regenerated).returncode == 0

    sbom["components"][0]["version"] = "0.0.0"
    regenerated.write_text(json.dumps(sbom))
    done = _run("sbom_matches.py", SBOM, regenerated)
    assert done.returncode == 1
    assert "run `make sbom`" in done.stdout
    assert f"missing from {SBOM}: {sbom['components'][0]['name']} 0.0.0" in done.stdout


def _report(tmp_path: Path, dependencies: list[dict[str, Any]]) -> Path:
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"dependencies": dependencies}))
    return report


def test_the_audit_fails_on_a_vulnerability_with_a_fix_and_names_the_upgrade(
    tmp_path: Path,
) -> None:
    report = _report(
        tmp_path,
        [
            {
                "name": "jinja2",
                "version": "3.1.0",
                "vulns": [{"id": "GHSA-1", "fix_versions": ["3.1.4"]}],
            },
            {"name": "orjson", "version": "3.13.0", "vulns": []},
        ],
    )
    done = _run("audit_fixable.py", report)
    assert done.returncode == 1
    assert "FIX AVAILABLE  jinja2 3.1.0: GHSA-1 -> upgrade to 3.1.4" in done.stdout


def test_a_vulnerability_without_a_fix_is_listed_but_does_not_fail(tmp_path: Path) -> None:
    report = _report(
        tmp_path,
        [{"name": "hl7", "version": "0.4.5", "vulns": [{"id": "PYSEC-9", "fix_versions": []}]}],
    )
    done = _run("audit_fixable.py", report)
    assert done.returncode == 0
    assert "no fix yet     hl7 0.4.5: PYSEC-9" in done.stdout


def test_an_audit_that_could_not_check_a_package_is_not_taken_as_clean(tmp_path: Path) -> None:
    report = _report(
        tmp_path,
        [
            {"name": "fastapi", "version": "0.165.0", "vulns": []},
            {"name": "typer", "version": "0.29.2", "skip_reason": "Dependency not found on PyPI"},
        ],
    )
    done = _run("audit_fixable.py", report)
    assert done.returncode == 2
    assert "1 of 2 dependencies could not be audited" in done.stdout
    assert _run("audit_fixable.py", tmp_path / "missing.json").returncode == 2
