"""Exit 0 when two CycloneDX SBOMs describe the same components and dependencies: the serial
number and the generation timestamp (new on every run) are ignored. Used by `make sbom-check`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _comparable(path: Path) -> dict[str, Any]:
    bom: dict[str, Any] = json.loads(path.read_text())
    bom.pop("serialNumber", None)
    bom.get("metadata", {}).pop("timestamp", None)
    return bom


def main(checked_in: Path, regenerated: Path) -> int:
    old, new = _comparable(checked_in), _comparable(regenerated)
    if old == new:
        print(f"{checked_in} matches uv.lock")
        return 0
    names = {(c["name"], c.get("version")) for c in old.get("components", [])}
    fresh = {(c["name"], c.get("version")) for c in new.get("components", [])}
    for name, version in sorted(fresh - names):
        print(f"  missing from {checked_in}: {name} {version}")
    for name, version in sorted(names - fresh):
        print(f"  no longer locked: {name} {version}")
    print(f"{checked_in} does not match uv.lock: run `make sbom` and commit it")
    return 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
