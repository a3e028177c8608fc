"""What a sign-in's password check costs: one argon2id hash and verification with medmesh's
parameters (RFC 9106, t=3, m=64 MiB, p=4), the check against the common-password list, and
how many verifications a second the server does when many sign-ins arrive at once (hashing
runs in threads, at most four at a time).

    .venv/bin/python benchmarks/password_hashing.py [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time

from _common import load_average
from medmesh.access.identity import passwords
from medmesh.access.identity.principals import Role

PASSWORD = "violet kettle harbour"


def timed(call: object, rounds: int) -> list[float]:
    assert callable(call)
    took = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        took.append(time.perf_counter() - started)
    return took


def line(label: str, seconds: list[float]) -> None:
    print(
        f"  {label:<44} p50 {statistics.median(seconds) * 1000:9.3f} ms"
        f"   max {max(seconds) * 1000:9.3f} ms   (n={len(seconds)})"
    )


async def concurrent(stored: str, count: int) -> float:
    started = time.perf_counter()
    results = await asyncio.gather(
        *(passwords.verify_password_async(stored, PASSWORD) for _ in range(count))
    )
    assert all(results)
    return count / (time.perf_counter() - started)


def main(rounds: int) -> None:
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load {load_average()}"
    )
    rules = passwords.rules_for(Role.CLINICIAN)
    started = time.perf_counter()
    listed = passwords.common_passwords()
    print(
        f"  common-password list: {len(listed)} entries loaded in "
        f"{(time.perf_counter() - started) * 1000:.1f} ms (once per process)"
    )
    line(
        "rules check (list, repetition, username)",
        timed(
            lambda: passwords.check_password_rules(PASSWORD, username="ada", rules=rules),
            rounds * 100,
        ),
    )
    stored = passwords.hash_password(PASSWORD, username="ada", rules=rules)
    line(
        "hash (argon2id t=3 m=64MiB p=4)",
        timed(lambda: passwords.hash_password(PASSWORD, username="ada", rules=rules), rounds),
    )
    line(
        "verify, right password", timed(lambda: passwords.verify_password(stored, PASSWORD), rounds)
    )
    line("verify, wrong password", timed(lambda: passwords.verify_password(stored, "nope"), rounds))
    for count in (1, 4, 16):
        rate = asyncio.run(concurrent(stored, count))
        print(
            f"  {count:>2} sign-ins at once (event loop, threads)       {rate:6.1f} verifications/s"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="2 rounds, for a smoke run")
    options = parser.parse_args()
    main(2 if options.quick else options.rounds)
