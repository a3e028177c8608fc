"""Exit 0 when PyPI's vulnerability data answers within 5 seconds (what pip-audit queries:
a release's JSON with its `vulnerabilities`), else 1. A mirror that serves package pages but
not release advisories counts as not answering."""

from __future__ import annotations

import json
import sys
import urllib.request

PROBE = "https://pypi.org/pypi/pip/24.0/json"


def main() -> int:
    try:
        with urllib.request.urlopen(PROBE, timeout=5) as answer:
            return 0 if "vulnerabilities" in json.load(answer) else 1
    except (OSError, ValueError):
        return 1


if __name__ == "__main__":
    sys.exit(main())
