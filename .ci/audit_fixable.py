"""Read pip-audit's JSON report: exit 1 when a locked dependency has a known vulnerability
with a fixed version available (upgrade it), print those without a fix yet as warnings (they
are tracked as docs/security/patch-plan.md says), exit 2 when there is no report or a
dependency could not be audited (pip-audit skips what the advisory service does not answer
for, and would otherwise report "no known vulnerabilities" for a run that checked nothing)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(report: Path) -> int:
    if not report.is_file():
        print("pip-audit produced no report (see its message above)")
        return 2
    fixable = 0
    dependencies = json.loads(report.read_text()).get("dependencies", [])
    skipped = [d["name"] for d in dependencies if d.get("skip_reason")]
    if skipped:
        print(f"{len(skipped)} of {len(dependencies)} dependencies could not be audited")
        print(f"(first: {', '.join(skipped[:5])}): is the advisory service reachable?")
        return 2
    for dependency in dependencies:
        for vuln in dependency.get("vulns", []):
            fixes = vuln.get("fix_versions") or []
            where = f"{dependency['name']} {dependency['version']}: {vuln['id']}"
            if fixes:
                fixable += 1
                print(f"FIX AVAILABLE  {where} -> upgrade to {', '.join(fixes)}")
            else:
                print(f"no fix yet     {where}")
    if fixable:
        print(f"{fixable} known vulnerabilities have a fix: upgrade (uv lock --upgrade-package)")
        return 1
    print("no known vulnerability with a fix available in the locked dependencies")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
