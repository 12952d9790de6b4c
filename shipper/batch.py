"""Records grouped into batches per key, bounded by size and age.

A batch also carries, per source, the offset the checkpoint may move to once
the batch is acknowledged ("marks"). Marks can travel in a batch with no
records (lines that only completed a skip or started a partial record): such a
batch is acknowledged without being sent, in order with the rest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Batch:
    key: bytes
    created: float
    records: list[bytes] = field(default_factory=list)
    size: int = 0
    marks: dict[str, tuple[str, int]] = field(default_factory=dict)  # source_id -> (path, offset)


class Batcher:
    def __init__(self, max_bytes: int, max_wait_s: float) -> None:
        self.max_bytes = max_bytes
        self.max_wait_s = max_wait_s
        self._open: dict[bytes, Batch] = {}

    def add(self, key: bytes, records: list[bytes], source_id: str, path: str, offset: int) -> list[Batch]:
        """Add a source's records; returns batches that became full."""
        full: list[Batch] = []
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = Batch(key, time.monotonic())
        for rec in records:
            if batch.size + len(rec) > self.max_bytes and batch.records:
                full.append(self._open.pop(key))
                batch = self._open[key] = Batch(key, time.monotonic())
            batch.records.append(rec)
            batch.size += len(rec) + 1
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
