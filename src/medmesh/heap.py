"""The garbage collector of a long-running process (the HTTP app, the ingest and DICOM
workers), set once its services have started.

- What start-up built (modules, SQLAlchemy's caches, the services) lives as long as the
  process: frozen, collections never walk it again. Unfrozen it was a 100-200 ms pause every
  few chart or search requests, and a worker's full collections walked it a few times a second
  (docs/benchmarks.md, "Reads without collector pauses", "The workers' start-up heap").
- The young generation is collected every 50,000 allocations instead of Python's 700, and the
  full collection is a hundred times rarer. The rules' state holds each patient's readings in
  their windows as small objects (rules/series.py `Point`), which the collector tracks: in an
  ingest worker at 20,000 readings/s it held over 100,000 of them, and the collections walking
  them took 15 % of the worker's CPU (docs/benchmarks.md, "PostgreSQL's part of a reading",
  the collector). Garbage cycles are still collected: young ones within 50,000 allocations,
  older ones at the rarer full collections (the server's RSS holding 10,000 patients' rule
  state was the same, 278-279 MiB).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_GENERATION_ALLOCATIONS = 50_000
MIDDLE_GENERATION_COLLECTIONS = 20
FULL_COLLECTION_EVERY = 100


@contextmanager
def long_lived_heap() -> Iterator[None]:
    """Freeze what exists now and collect less often, until the block ends (then as before)."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(
        YOUNG_GENERATION_ALLOCATIONS, MIDDLE_GENERATION_COLLECTIONS, FULL_COLLECTION_EVERY
    )
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
