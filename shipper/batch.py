"""Records grouped into batches per key, bounded by size and age.

Records arrive from a source as one block (serialised back to back, with the
offset just past each one) and are cut into batches without being copied one
by one. A batch also carries, per source, the position the checkpoint may
move to once the batch is acknowledged ("marks"). Marks can travel in a batch
with no records (lines that only completed a skip or started a partial
record): such a batch is acknowledged without being sent, in order with the
rest.

The marks also travel to the lake, so it knows how long each source is
(``verify`` reports a tail that never arrived). The last batch of a key that
carried records is therefore followed, once the key has been quiet for
``report_s`` (or at shutdown), by a report: a batch with no records that is
sent all the same. A source that is finished (its file closed) is reported
``sealed``, at once.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from dataclasses import dataclass, field

from schemas.wire import Run
from shipper.identity import Position


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


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a source stands once a batch is delivered."""
    path: str
    pos: Position
    source: bytes        # the source's fields (Records.source), for the lake's report
    sealed: bool = False  # the file is finished: nothing more will come


@dataclass
class Outgoing:
    """One container's records on their way out: filled by the Batcher, encoded and sent by Delivery."""
    key: bytes
    created: float
    runs: list[Run] = field(default_factory=list)
    size: int = 0
    count: int = 0
    marks: dict[str, Progress] = field(default_factory=dict)  # source_id -> position after this batch
    report: bool = False  # send it even with no records: it tells the lake where sources stand

    @property
    def sent(self) -> bool:
        return bool(self.count) or self.report


class Batcher:
    def __init__(self, max_bytes: int, max_wait_s: float, report_s: float = 10.0) -> None:
        self.max_bytes = max_bytes
        self.max_wait_s = max_wait_s
        self.report_s = report_s
        self._open: dict[bytes, Outgoing] = {}
        # per key: when its last batch with records left, and the marks not reported since
        self._unreported: dict[bytes, tuple[float, dict[str, Progress]]] = {}

    def _batch(self, key: bytes) -> Outgoing:
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = Outgoing(key, time.monotonic())
        return batch

    def add(self, key: bytes, records: Records | None, source_id: str, progress: Progress) -> list[Outgoing]:
        """Add a source's records; returns batches that became full."""
        full: list[Outgoing] = []
        batch = self._batch(key)
        ends, n, i, base = (records.ends, len(records), 0, 0) if records else (memoryview(b""), 0, 0, 0)
        while i < n:
            # as many records as fit; one that is larger than a whole batch goes alone
            j = bisect_right(ends, base + self.max_bytes - batch.size, i, n)
            if j == i and batch.count:
                full.append(self._close(key))
                batch = self._batch(key)
                continue
            j = max(j, i + 1)
            assert records is not None
            batch.runs.append(Run(records.source, records.data[base:ends[j - 1]], j - i))
            batch.size += ends[j - 1] - base
            batch.count += j - i
            i, base = j, ends[j - 1]
        batch.marks[source_id] = progress
        batch.report |= progress.sealed
        return full

    def _close(self, key: bytes, now: float | None = None) -> Outgoing:
        batch = self._open.pop(key)
        # A source belongs to one key, so these are the latest positions of the key's sources: the batch's own
        # over those not reported yet, which a source with nothing in this batch keeps for the next report.
        # Each came with an earlier batch or from report_later (where reading resumed: its records are
        # checkpointed, buffered or already batched), so the report, which follows this batch, never gets
        # ahead of a source's records.
        since, marks = self._unreported.pop(key, (None, {}))
        marks.update(batch.marks)
        if batch.count:
            self._unreported[key] = (time.monotonic() if now is None else now, marks)
        elif since is not None:
            if batch.report:
                batch.marks = marks
            else:
                self._unreported[key] = (since, marks)
        return batch

    def report_later(self, key: bytes, source_id: str, progress: Progress) -> None:
        """Tell the lake where a source stands at the next report (after a restart the last
        batch before it may have been its last)."""
        since, marks = self._unreported.get(key, (time.monotonic(), {}))
        marks.setdefault(source_id, progress)
        self._unreported[key] = (since, marks)

    def seal(self, key: bytes) -> list[Outgoing]:
        """A source of ``key`` is finished: its batch goes now, followed by a report."""
        out = [self._close(key)] if key in self._open else []
        return out + (self._reports([key]) if key in self._unreported else [])

    def _reports(self, keys: list[bytes]) -> list[Outgoing]:
        out = []
        for key in keys:
            _, marks = self._unreported.pop(key)
            out.append(Outgoing(key, time.monotonic(), marks=marks, report=True))
        return out

    def due(self, now: float | None = None) -> list[Outgoing]:
        """Batches old enough to go, then reports for keys quiet since their last records."""
        now = time.monotonic() if now is None else now
        out = [self._close(k, now) for k in [k for k, b in self._open.items() if now - b.created >= self.max_wait_s]]
        return out + self._reports([k for k, (t, _) in self._unreported.items()
                                    if k not in self._open and now - t >= self.report_s])

    def drain(self) -> list[Outgoing]:
        """Everything, and a report after each key's last records (shutdown)."""
        out = [self._close(k) for k in list(self._open)]
        return out + self._reports(list(self._unreported))

    def __len__(self) -> int:
        return len(self._open)
