"""The chain rule: canonical form, hashes, entries and anchors, without a database."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medmesh.access.audit.entries import AuditEntry, InvalidAnchor, parse_anchor
from medmesh.domain.audit import (
    GENESIS_HASH,
    canonical,
    chain_hash,
    hashed_fields,
    record_fields,
    rfc3339,
    seal,
)

AT = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
ENTRY = AuditEntry(
    action="R",
    subtype="read",
    actor_kind="user",
    actor_id="u-1",
    actor_name="Dr Ada",
    patient_id="p-1",
    resource_type="Observation",
    resource_id="o-1",
    purpose="TREAT",
)

_text = st.text(max_size=40)
_fields = st.fixed_dictionaries(
    {
        "seq": st.integers(min_value=1, max_value=2**53),
        "id": _text,
        "actor_name": _text,
        "basis": st.none() | _text,
        "source": st.none() | _text,
    }
)


@given(_fields)
def test_the_canonical_form_is_what_pythons_json_module_writes(fields: dict[str, object]) -> None:
    # Anyone can re-verify the chain with the standard library alone.
    expected = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical(fields) == expected.encode("utf-8")


def test_a_records_hash_is_sha256_of_the_previous_hash_and_its_canonical_form() -> None:
    record = seal(1, "id-1", AT, ENTRY, GENESIS_HASH)
    fields = record_fields(record)
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert record.hash == hashlib.sha256((GENESIS_HASH + text).encode()).hexdigest()
    assert "hash" not in fields and fields["prev_hash"] == GENESIS_HASH
    assert fields["recorded"] == "2026-11-25T09:30:00.000000Z"
    assert fields == hashed_fields(1, "id-1", AT, ENTRY, GENESIS_HASH)


def test_every_field_changes_the_hash() -> None:
    record = seal(4, "id-4", AT, ENTRY, "a" * 64)
    base = record_fields(record)
    for name, value in base.items():
        changed = dict(base, **{name: (value or "") + "x" if name != "seq" else 5})
        assert chain_hash(record.prev_hash, changed) != record.hash, name


def test_times_are_written_in_utc_with_microseconds_whatever_their_offset() -> None:
    paris = timezone(timedelta(hours=1))
    assert rfc3339(datetime(2026, 1, 2, 3, 4, 5, tzinfo=paris)) == "2026-01-02T02:04:05.000000Z"
    assert rfc3339(datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=UTC)) == "2026-01-02T03:04:05.000007Z"
    with pytest.raises(ValueError, match="naive"):
        rfc3339(datetime(2026, 1, 2))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"action": "X"}, "action must be one of C, R, U, D, E"),
        ({"outcome": "12"}, "outcome must be 0, 4 or 8"),
        ({"actor_id": ""}, "must not be empty"),
        ({"source": "x" * 101}, "source is longer than 100 characters"),
        ({"purpose": "A" * 17}, "purpose is longer than 16 characters"),
    ],
)
def test_entries_that_the_log_cannot_hold_are_refused(
    changes: dict[str, str], message: str
) -> None:
    values = {
        "action": "R",
        "subtype": "read",
        "actor_kind": "user",
        "actor_id": "u-1",
        "actor_name": "Dr Ada",
        **changes,
    }
    with pytest.raises(ValueError, match=message):
        AuditEntry(**values)  # type: ignore[arg-type]


def test_an_anchor_is_a_record_number_and_its_hash() -> None:
    anchor = parse_anchor(f" 1234:{'AB' * 32}\n")
    assert (anchor.seq, anchor.hash) == (1234, "ab" * 32)
    for bad in ("", "1234", f"0:{'a' * 64}", f"-1:{'a' * 64}", f"1:{'a' * 63}", "1:" + "z" * 64):
        with pytest.raises(InvalidAnchor, match="SEQ:HASH"):
            parse_anchor(bad)
