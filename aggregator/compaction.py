"""Compaction: hot files → warm files per partition and hour, warm → cold per partition and day or run of hours.

Hot files are small (one per partition per flush). Once ``warm_after_s`` old
they are merged, with any warm file of the same hours still below
``warm_file_max_bytes``, into one warm file per partition and hour of event
time: sorted by namespace, container and time, in large row groups. Warm files
of a UTC day that ended ``cold_after_s`` ago become cold files per partition
and day, compressed harder, on the cold root (local or ``s3://``): one for the
day, or, when the day holds more than ``cold_file_max_rows``, one per run of
whole hours up to that many rows (``spans``), as every lookup parses the footer
of each file it reads, and a footer grows with the file's row groups.

Files under an active legal hold are never compacted: they stay byte for byte
as they are (their sha256 is in exports and the audit trail) until the hold is
released. A job writes a file only for the periods its inputs hold rows of (a
record far from the others costs one more file, not one per hour between).

A job writes all its outputs, checks that they hold exactly as many rows as its
inputs, and swaps inputs for outputs in one catalog transaction: a reader
planning from the catalog sees either the inputs or the outputs, never both and
never neither. Inputs stay on storage for ``delete_grace_s`` so a query planned
before the swap still finds them; ``tidy`` deletes them when due and removes
files an interrupted job left behind that the catalog never listed.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from aggregator.config import Settings
from aggregator.tidy import tidy
from aggregator.workspace import Workspace
from lake.catalog.model import FileEntry, NewFile, Tier
from lake.config import TiersConfig
from lake.holds import Hold, holding
from lake.keys import MasterKey, key_scope
from lake.storage import Layout
from runtime.durable import safe_name
from runtime.errors import StorageError
from runtime.progress import QUIET, Progress
from schemas.record import DAY_NS, HOUR_NS, SECOND_NS

log = logging.getLogger("loglake.compaction")


@dataclass(frozen=True)
class Job:
    tier: Tier                     # the tier written
    topic: str
    partition: str
    period_ns: int                 # HOUR_NS or DAY_NS
    inputs: tuple[FileEntry, ...]

    def inputs_for(self, start: int, end: int) -> list[FileEntry]:
        return [f for f in self.inputs if f.min_time < end and f.max_time >= start]


def spans(hours: Sequence[tuple[int, int]], period_ns: int, max_rows: int) -> list[tuple[int, int]]:
    """The [start, end) of each file to write, from the (hour start, rows) of every hour holding rows, in
    order: the whole period, or, for a period of more than ``max_rows`` (0: no limit), each run of
    consecutive hours up to that many rows (an hour of more is a file alone: a file never splits an hour,
    whose rows a trace's lines share)."""
    runs: list[list[int]] = []   # start, end, rows
    for (hour, _), (after, _) in zip(hours, hours[1:]):
        if after <= hour:
            raise ValueError("spans needs every hour once, in order")
    for hour, rows in hours:
        if runs and runs[-1][0] // period_ns == hour // period_ns and (not max_rows or runs[-1][2] + rows <= max_rows):
            runs[-1][1:] = [hour + HOUR_NS, runs[-1][2] + rows]
        else:
            runs.append([hour, hour + HOUR_NS, rows])
    per_period: dict[int, int] = defaultdict(int)
    for start, _, _ in runs:
        per_period[start // period_ns] += 1
    out = []
    for start, end, _ in runs:
        period = start // period_ns
        out.append((period * period_ns, (period + 1) * period_ns) if per_period[period] == 1 else (start, end))
    return out


@dataclass
class Report:
    jobs: int = 0
    files_in: int = 0
    files_out: int = 0
    rows: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    deleted: int = 0
    seconds: float = 0.0
    by_tier: dict[str, int] = field(default_factory=dict)  # files written per tier

    def add(self, other: Report) -> None:
        for name in ("jobs", "files_in", "files_out", "rows", "bytes_in", "bytes_out", "deleted", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for tier, n in other.by_tier.items():
            self.by_tier[tier] = self.by_tier.get(tier, 0) + n


def _stamp(start_ns: int, end_ns: int) -> str:
    """A file's period: its day, or its first hour when it holds less (an hour, or part of a day)."""
    return time.strftime("%Y%m%d" if end_ns - start_ns == DAY_NS else "%Y%m%d%H", time.gmtime(start_ns // SECOND_NS))


def _timestamp_sql(ns: int) -> str:
    secs, frac = divmod(ns, SECOND_NS)
    return f"'{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(secs))}.{frac:09d}'::TIMESTAMP_NS"


def output_name(job: Job, start: int, end: int, inputs: Sequence[FileEntry]) -> str:
    """Named after what it holds: period, offset range, and (to tell apart reruns with other inputs) the inputs."""
    digest = hashlib.sha256("\n".join(sorted(f.path for f in inputs)).encode()).hexdigest()[:8]
    first, last = min(f.first_offset for f in inputs), max(f.last_offset for f in inputs)
    return (f"{job.tier}/{safe_name(job.topic)}/{safe_name(job.partition)}/"
            f"{_stamp(start, end)}-{first:020d}-{last:020d}-{digest}.parquet")


class Compactor:
    def __init__(self, tiers: TiersConfig, ws: Workspace) -> None:
        self.tiers = tiers
        self.catalog, self.keyring, self.storage, self.writer = ws.catalog, ws.keyring, ws.storage, ws.writer

    @classmethod
    def open(cls, settings: Settings, master: MasterKey) -> Compactor:
        """A compactor with its own catalog connection and DuckDB, for use beside a running consumer."""
        return cls(settings.tiers, Workspace.open(settings, master))

    def close(self) -> None:
        self.catalog.close()

    def run(self, now_ns: int | None = None, stop: threading.Event | None = None,
            progress: Progress = QUIET) -> Report:
        """One pass: tidy, hot → warm, warm → cold. ``now_ns`` moves the clock that ages data (tests,
        backfills); deletions of replaced files always follow the real clock."""
        now = time.time_ns() if now_ns is None else now_ns
        report = Report()
        started = time.monotonic()
        with self.storage.exclusive():
            # Hot files are the consumer's: a running aggregator may be writing one right now.
            report.deleted += tidy(self.catalog, self.storage, (Tier.WARM, Tier.COLD))
            for what, plan in (("hot → warm", self.plan_warm), ("warm → cold", self.plan_cold)):
                jobs = plan(now)  # cold is planned from the warm files just written
                inputs = [f for job in jobs for f in job.inputs]
                with progress.phase(f"compact {what}", len(inputs), sum(f.bytes for f in inputs)) as step:
                    for job in jobs:
                        if stop is not None and stop.is_set():
                            break
                        report.add(self.execute(job))
                        for f in job.inputs:
                            step(f.bytes)
            if self.tiers.delete_grace_s == 0:
                report.deleted += tidy(self.catalog, self.storage, ())
        report.seconds = time.monotonic() - started
        return report

    def _movable(self, tier: Tier) -> list[FileEntry]:
        """Files of a tier that compaction may replace: those no active legal hold covers."""
        holds: list[Hold] = self.catalog.holds()
        return [f for f in self.catalog.files(tier) if not holding(holds, f)]

    def plan_warm(self, now: int) -> list[Job]:
        ripe = [f for f in self._movable(Tier.HOT) if f.created_at <= now - self.tiers.warm_after_s * SECOND_NS]
        warm_by_hour: dict[tuple[str, str, int], list[FileEntry]] = defaultdict(list)
        for f in self._movable(Tier.WARM):
            if f.bytes < self.tiers.warm_file_max_bytes:
                warm_by_hour[(f.topic, f.partition, f.min_time // HOUR_NS)].append(f)
        jobs = []
        for (topic, partition), files in _by_partition(ripe).items():
            hours = {h for f in files for h in range(f.min_time // HOUR_NS, f.max_time // HOUR_NS + 1)}
            merge = [w for h in sorted(hours) for w in warm_by_hour.get((topic, partition, h), ())]
            jobs.append(Job(Tier.WARM, topic, partition, HOUR_NS, (*files, *merge)))
        return jobs

    def plan_cold(self, now: int) -> list[Job]:
        cutoff = now - self.tiers.cold_after_s * SECOND_NS
        ripe = [f for f in self._movable(Tier.WARM) if (f.min_time // DAY_NS + 1) * DAY_NS <= cutoff]
        by_day: dict[tuple[str, str, int], list[FileEntry]] = defaultdict(list)
        for f in ripe:
            by_day[(f.topic, f.partition, f.min_time // DAY_NS)].append(f)
        return [Job(Tier.COLD, t, p, DAY_NS, tuple(files)) for (t, p, _), files in sorted(by_day.items())]

    def execute(self, job: Job) -> Report:
        layout = self.storage.layout(job.tier)
        outputs: list[NewFile] = []
        try:
            for start, end in self._spans(job):
                new = self._write_span(job, start, end, job.inputs_for(start, end), layout)
                if new is not None:
                    outputs.append(new)
            rows_in, rows_out = sum(f.rows for f in job.inputs), sum(n.entry.rows for n in outputs)
            if rows_in != rows_out:
                raise StorageError(f"compaction of {job.tier} {job.topic}/{job.partition} read {rows_in} rows "
                                   f"but wrote {rows_out}; inputs left in place")
            self.catalog.replace(job.inputs, outputs, time.time_ns() + self.tiers.delete_grace_s * SECOND_NS)
        except BaseException:
            for new in outputs:
                self.storage.discard(job.tier, new.entry.path)
            raise
        log.info("compacted", extra={"tier": job.tier, "partition": job.partition, "files_in": len(job.inputs),
                                     "files_out": len(outputs), "rows": rows_out})
        return Report(jobs=1, files_in=len(job.inputs), files_out=len(outputs), rows=rows_out,
                      bytes_in=sum(f.bytes for f in job.inputs), bytes_out=sum(n.entry.bytes for n in outputs),
                      by_tier={job.tier.value: len(outputs)})

    def _spans(self, job: Job) -> list[tuple[int, int]]:
        """The [start, end) of every file to write (``spans``), from the inputs' rows per hour."""
        # in integer nanoseconds, as spans and the writer's bounds count: date_trunc goes through microseconds
        hours = self.writer.con.execute(f"SELECT t - ((t % {HOUR_NS}) + {HOUR_NS}) % {HOUR_NS} AS h, count(*) FROM "
                                        f"(SELECT epoch_ns(time) AS t FROM ({self.writer.scan(self.keyring.by_key(job.inputs, self.storage.location))})) "
                                        f"GROUP BY h ORDER BY h").fetchall()
        limit = self.tiers.cold_file_max_rows if job.tier is Tier.COLD else 0
        return spans(hours, job.period_ns, limit)

    def _write_span(self, job: Job, start: int, end: int, inputs: list[FileEntry], layout: Layout) -> NewFile | None:
        query = (f"SELECT * FROM ({self.writer.scan(self.keyring.by_key(inputs, self.storage.location))}) WHERE time >= {_timestamp_sql(start)} "
                 f"AND time < {_timestamp_sql(end)}")
        rel = output_name(job, start, end, inputs)
        key = self.keyring.for_scope(key_scope(job.tier, start))
        written = self.writer.write(query, self.storage.target(job.tier, rel), key, layout)
        if not written.rows:  # an input spanned this period without a row in it
            self.storage.unlink(job.tier, rel)
            return None
        return written.new_file(path=rel, tier=job.tier, topic=job.topic, partition=job.partition,
                                first_offset=min(f.first_offset for f in inputs),
                                last_offset=max(f.last_offset for f in inputs), key_id=key.key_id,
                                created_at=time.time_ns(), key_lineage=self.keyring.lineage(inputs))


def _by_partition(files: Iterable[FileEntry]) -> dict[tuple[str, str], list[FileEntry]]:
    out: dict[tuple[str, str], list[FileEntry]] = defaultdict(list)
    for f in files:
        out[(f.topic, f.partition)].append(f)
    return out
