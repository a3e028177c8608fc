"""The audit trail: entries to append on every access, and verification of the hash chain.

`AuditEntry` and the chain rule live in `medmesh.domain.audit` (the store needs them and may
not import `access`); they are re-exported here, the one place callers look.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from medmesh.domain.audit import (
    GENESIS_HASH,
    Action,
    AuditEntry,
    AuditRecord,
    Outcome,
    chain_hash,
    record_fields,
)
from medmesh.domain.errors import MedmeshError
from medmesh.store.audit_log import AuditLog, ChainHead
from medmesh.store.database import Database

__all__ = [
    "Action",
    "Anchor",
    "AuditEntry",
    "AuditRecord",
    "Break",
    "BreakKind",
    "ChainReport",
    "InvalidAnchor",
    "Outcome",
    "parse_anchor",
    "verify_chain",
]

CHUNK_SIZE = 5000
_ANCHOR = re.compile(r"(?P<seq>[1-9][0-9]{0,18}):(?P<hash>[0-9a-f]{64})")


class InvalidAnchor(MedmeshError):
    """An anchor that is not SEQ:HASH."""


@dataclass(frozen=True, slots=True)
class Anchor:
    """A head an operator wrote down earlier: record `seq` had hash `hash`."""

    seq: int
    hash: str


def parse_anchor(text: str) -> Anchor:
    """`1234:<64 hex digits>` (as `medmesh audit head` prints it) → Anchor."""
    match = _ANCHOR.fullmatch(text.strip().lower())
    if match is None:
        raise InvalidAnchor(
            "the anchor must be SEQ:HASH, a record number and its 64-hex-digit SHA-256 hash, "
            "as printed by `medmesh audit head`"
        )
    return Anchor(int(match["seq"]), match["hash"])


class BreakKind(StrEnum):
    ALTERED = "altered"  # a record's hash does not match its contents
    RELINKED = "relinked"  # a record's prev_hash is not the previous record's hash
    MISSING = "missing"  # a gap in seq: records deleted
    BAD_START = "bad-start"  # the first record is not #1 or does not start from genesis
    ANCHOR_MISMATCH = "anchor-mismatch"  # the anchored record has another hash now
    TRUNCATED = "truncated"  # the chain ends before the anchored record


@dataclass(frozen=True, slots=True)
class Break:
    """The first broken link: the record where verification failed, and why."""

    kind: BreakKind
    seq: int  # the record found broken, or for TRUNCATED the anchored record that is gone
    record_id: str | None
    reason: str

    def __str__(self) -> str:
        where = f"record #{self.seq}"
        if self.record_id is not None:
            where += f" ({self.record_id})"
        return f"audit chain broken at {where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ChainReport:
    checked: int  # records whose hash and link were verified before any break
    head: ChainHead | None  # the last record verified intact
    broken: Break | None
    anchor: Anchor | None = None

    @property
    def intact(self) -> bool:
        return self.broken is None

    def __str__(self) -> str:
        if self.broken is not None:
            return str(self.broken)
        if self.head is None:
            return "audit chain intact: the log is empty"
        head = f"head #{self.head.seq} {self.head.hash}"
        text = f"audit chain intact: {self.checked:,} records, {head}"
        if self.anchor is not None:
            text += f" (anchor #{self.anchor.seq} matches)"
        return text


def _check(record: AuditRecord, previous: AuditRecord | None) -> Break | None:
    """The first thing wrong with `record` following `previous` (None: it comes first)."""

    def broken(kind: BreakKind, reason: str) -> Break:
        return Break(kind, record.seq, record.id, reason)

    if previous is None:
        if record.seq != 1:
            span = "#1" if record.seq == 2 else f"#1..#{record.seq - 1}"
            return broken(BreakKind.BAD_START, f"the chain starts here: records {span} are missing")
        if record.prev_hash != GENESIS_HASH:
            return broken(BreakKind.BAD_START, "the first record does not start from genesis")
    elif record.seq != previous.seq + 1:
        first, last = previous.seq + 1, record.seq - 1
        span = f"record #{first} is" if first == last else f"records #{first}..#{last} are"
        return broken(BreakKind.MISSING, f"{span} missing (deleted)")
    if chain_hash(record.prev_hash, record_fields(record)) != record.hash:
        return broken(BreakKind.ALTERED, "its hash does not match its contents")
    if previous is not None and record.prev_hash != previous.hash:
        return broken(
            BreakKind.RELINKED,
            f"its prev_hash is not the hash of record #{previous.seq} "
            "(one of the two was altered or replaced)",
        )
    return None


def _check_anchor(record: AuditRecord, anchor: Anchor | None) -> Break | None:
    if anchor is None or record.seq != anchor.seq or record.hash == anchor.hash:
        return None
    reason = "its hash differs from the anchor: the chain was rewritten from here or earlier"
    return Break(BreakKind.ANCHOR_MISMATCH, record.seq, record.id, reason)


async def verify_chain(
    database: Database,
    *,
    anchor: Anchor | None = None,
    chunk_size: int = CHUNK_SIZE,
    progress: Callable[[int], None] | None = None,
) -> ChainReport:
    """Walk the whole chain in order and report the first broken link, if any.

    Reads `chunk_size` records per read transaction, so memory stays flat and no snapshot is
    held for the whole walk. Records appended meanwhile are verified too. `progress` is told
    the number of records checked after each chunk.
    """
    checked = 0
    previous: AuditRecord | None = None
    while True:
        async with database.read() as conn:
            chunk = await AuditLog(conn).after(previous.seq if previous else 0, chunk_size)
        if not chunk:
            break
        for record in chunk:
            broken = _check(record, previous) or _check_anchor(record, anchor)
            if broken is not None:
                return ChainReport(checked, _head(previous), broken, anchor)
            checked += 1
            previous = record
        if progress is not None:
            progress(checked)
    if anchor is not None and (previous is None or previous.seq < anchor.seq):
        ends = "the log is empty" if previous is None else f"the chain ends at #{previous.seq}"
        truncated = Break(
            BreakKind.TRUNCATED,
            anchor.seq,
            None,
            f"{ends}: the anchored record and any after it were removed",
        )
        return ChainReport(checked, _head(previous), truncated, anchor)
    return ChainReport(checked, _head(previous), None, anchor)


def _head(record: AuditRecord | None) -> ChainHead | None:
    return None if record is None else ChainHead(record.seq, record.hash)
