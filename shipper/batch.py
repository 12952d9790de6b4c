"""Records grouped into batches per key, bounded by size and age.

Records arrive from a source as one block (serialised back to back, with the
offset just past each one) and are cut into batches without being copied one
by one. A batch also carries, per source, the offset the checkpoint may move
to once the batch is acknowledged ("marks"). Marks can travel in a batch with
no records (lines that only completed a skip or started a partial record):
such a batch is acknowledged without being sent, in order with the rest.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from dataclasses import dataclass, field

from schemas.wire import Run


@dataclass(frozen=True, slots=True)
class Records:
    """A source's records: ``data`` holds them back to back, each followed by a newline;
    ``ends[i]`` is the offset just past record i; ``source`` is the file's JSON object of
    schemas.record.SOURCE_FIELDS."""

    data: bytes
    ends: memoryview
    source: bytes

    def __len__(self) -> int:
        return len(self.ends)


@dataclass
class Batch:
    key: bytes
    created: float
    runs: list[Run] = field(default_factory=list)
    size: int = 0
    count: int = 0
    marks: dict[str, tuple[str, int]] = field(default_factory=dict)  # source_id -> (path, offset)


class Batcher:
    def __init__(self, max_bytes: int, max_wait_s: float) -> None:
        self.max_bytes = max_bytes
        self.max_wait_s = max_wait_s
        self._open: dict[bytes, Batch] = {}

    def _batch(self, key: bytes) -> Batch:
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = Batch(key, time.monotonic())
        return batch

    def add(self, key: bytes, records: Records | None, source_id: str, path: str, offset: int) -> list[Batch]:
        """Add a source's records; returns batches that became full."""
        full: list[Batch] = []
        batch = self._batch(key)
        ends, n, i, base = (records.ends, len(records), 0, 0) if records else (memoryview(b""), 0, 0, 0)
        while i < n:
            # as many records as fit; one that is larger than a whole batch goes alone
            j = bisect_right(ends, base + self.max_bytes - batch.size, i, n)
            if j == i and batch.count:
                full.append(self._open.pop(key))
                batch = self._batch(key)
                continue
            j = max(j, i + 1)
            assert records is not None
            batch.runs.append(Run(records.source, records.data[base:ends[j - 1]], j - i))
            batch.size += ends[j - 1] - base
            batch.count += j - i
            i, base = j, ends[j - 1]
        batch.marks[source_id] = (path, offset)
        return full

    def due(self, now: float | None = None) -> list[Batch]:
        now = time.monotonic() if now is None else now
        keys = [k for k, b in self._open.items() if now - b.created >= self.max_wait_s]
        return [self._open.pop(k) for k in keys]

    def drain(self) -> list[Batch]:
        out = list(self._open.values())
        self._open.clear()
        return out

    def __len__(self) -> int:
        return len(self._open)
