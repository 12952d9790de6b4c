"""The aggregator's /metrics, /healthz (liveness) and /readyz (readiness).

Liveness fails when a restart may help or a person must act: consumption
stalled (batches wait in the source and nothing was committed for
``stall_after_s`` beyond the flush interval), or the catalog or a local storage
tier cannot be written.
Readiness adds that the source answers and the first poll is done.

Writability is checked without writing anything (``os.access``, ``statvfs``:
a read-only mount, permissions, a path that is not a directory, no space or
no inodes left) in a thread of its own with a time limit, so a hung
filesystem makes the check fail instead of blocking the event loop or taking
the threads the aggregator writes with. An ``s3://`` cold tier is not checked.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from aggregator import validate
from aggregator.compaction import Report
from aggregator.consume import Aggregator
from aggregator.source.spool import UNREADABLE_REASONS
from lake.catalog.model import TIERS
from runtime import metrics

if TYPE_CHECKING:
    from aggregator.retention import RetentionTotals

# Reasons schemas.wire.decode gives (WireError.reason); with aggregator.validate's and the spool's,
# every reason a batch is quarantined for.
WIRE_REASONS = ("bad_magic", "truncated", "unknown_version", "bad_checksum", "bad_body", "schema")
QUARANTINE_REASONS = (*WIRE_REASONS, validate.REASON, *UNREADABLE_REASONS)
PROBE_TIMEOUT_S = 2.0


def _families(agg: Aggregator, compaction: Report, retention: RetentionTotals, f: metrics.Families) -> None:
    for name, key, doc in (("consumed_batches", "batches_consumed", "batches consumed (quarantined ones included)"),
                           ("stored_records", "records_stored", "records written to Parquet"),
                           ("written_files", "files_written", "Parquet files written")):
        f.counter(name, doc, agg.stats[key])
    f.counter("dropped_duplicate_records", "resent records dropped by id", agg.dedup.dropped)
    f.counters("quarantined_batches", "batches quarantined, by reason", "reason", agg.quarantined_by_reason,
               QUARANTINE_REASONS)
    f.counters("spool_rewinds", "times a node's spool sequence went back and was read again", "node",
               getattr(agg.source, "rewinds", {}))
    f.gauge("buffered_records", "records decoded and waiting to be written", sum(b.rows for b in agg.buffers.values()))
    f.gauge("last_flush_timestamp_seconds", "when a partition was last committed (Unix time; 0: not yet)",
            agg.last_flush_unix)
    f.gauges("consumer_lag_batches", "batches in the source not committed yet, per partition", "partition",
             agg.source.lag())
    for name, key, doc in (("compaction_jobs", "jobs", "compaction jobs done"),
                           ("compaction_input_files", "files_in", "files compacted away"),
                           ("compaction_output_files", "files_out", "files written by compaction"),
                           ("compaction_rows", "rows", "rows compacted"),
                           ("compaction_read_bytes", "bytes_in", "bytes read by compaction"),
                           ("compaction_written_bytes", "bytes_out", "bytes written by compaction")):
        f.counter(name, doc, getattr(compaction, key))
    for name, key, doc in (("retention_deleted_rows", "rows_deleted", "records deleted by retention"),
                           ("retention_deleted_files", "files_deleted", "files deleted by retention"),
                           ("retention_rewritten_files", "files_rewritten", "files rewritten by retention"),
                           ("retention_destroyed_keys", "keys_destroyed",
                            "data keys destroyed (crypto-shredded) by retention")):
        f.counter(name, doc, getattr(retention, key))
    f.counters("background_runs", "background passes done, by job", "job", {j.name: j.runs for j in agg.jobs})
    f.counters("background_errors", "background passes that failed, by job", "job",
               {j.name: j.errors for j in agg.jobs})


def registry(agg: Aggregator, compaction: Report, retention: RetentionTotals) -> CollectorRegistry:
    return metrics.registry("aggregator", lambda f: _families(agg, compaction, retention, f))


def _not_writable(path: Path, directory: bool) -> str | None:
    """Why ``path`` cannot be written (for a directory: files created in it), or None. A directory not
    made yet is judged by the nearest one above it that exists: the writer creates the rest."""
    while directory and not os.path.lexists(path) and path.parent != path:
        path = path.parent
    try:
        st = os.statvfs(path)
    except OSError as e:
        return f"{path}: {e.strerror}"
    if directory and not path.is_dir():
        return f"{path} is not a directory"
    if st.f_flag & os.ST_RDONLY:
        return f"{path} is on a read-only file system"
    if not os.access(path, os.W_OK | (os.X_OK if directory else 0)):
        return f"{path} is not writable by this user"
    if st.f_bavail == 0:
        return f"no space left on the file system of {path}"
    if st.f_files and st.f_favail == 0:  # f_files 0: the file system has no inode limit
        return f"no inodes left on the file system of {path}"
    return None


def _resolve(fut: asyncio.Future[list[str]], result: list[str]) -> None:
    if not fut.done():
        fut.set_result(result)


def unwritable(agg: Aggregator) -> list[str]:
    """What cannot be written: the catalog (its directory, for the WAL, and its files), then each local tier."""
    out = []
    catalog = agg.cfg.catalog_path
    why = _not_writable(catalog.parent, True)
    for f in (catalog, catalog.with_name(catalog.name + "-wal"), catalog.with_name(catalog.name + "-shm")):
        if why is None and os.path.lexists(f):
            why = _not_writable(f, False)
    if why:
        out.append(f"catalog not writable: {why}")
    for tier in TIERS:
        root = agg.storage.roots[tier]
        if "://" not in root:
            why = _not_writable(Path(root) / tier, True)
            if why:
                out.append(f"storage tier {tier} not writable: {why}")
    return out


class Checks:
    """/healthz and /readyz of one aggregator."""

    def __init__(self, agg: Aggregator) -> None:
        self.agg = agg
        self._probe: asyncio.Future[list[str]] | None = None

    async def _unwritable(self) -> list[str]:
        # One probe at a time, in a daemon thread: one stuck in a hung filesystem is waited on again by the
        # next check instead of piling up, and does not hold up the process's exit.
        if self._probe is None or self._probe.done():
            loop = asyncio.get_running_loop()
            fut = self._probe = loop.create_future()

            def probe() -> None:
                try:
                    result = unwritable(self.agg)
                except Exception as e:  # noqa: BLE001 - the check reports, it never raises
                    result = [f"storage check failed: {e}"]
                try:
                    loop.call_soon_threadsafe(_resolve, fut, result)
                except RuntimeError:  # the loop closed meanwhile (shutting down)
                    pass
            threading.Thread(target=probe, name="loglake-storage-check", daemon=True).start()
        try:
            return await asyncio.wait_for(asyncio.shield(self._probe), PROBE_TIMEOUT_S)
        except asyncio.TimeoutError:
            return [f"storage did not answer a writability check within {PROBE_TIMEOUT_S:g} s"]

    def _stalled(self) -> list[str]:
        cfg = self.agg.cfg
        silent = self.agg.stalled_for()
        # records wait up to flush_interval_ms for their commit by design: that part is not a stall
        if not cfg.stall_after_s or silent < cfg.stall_after_s + cfg.flush_interval_ms / 1000:
            return []
        waiting = {p: n for p, n in sorted(self.agg.source.lag().items()) if n}
        parts = ", ".join(f"{p}: {n}" for p, n in list(waiting.items())[:5]) + (", …" if len(waiting) > 5 else "")
        return [f"consumption stalled: nothing committed for {silent:.0f} s with batches waiting ({parts})"]

    async def healthz(self) -> tuple[bool, str]:
        problems = self._stalled() + await self._unwritable()
        return not problems, "; ".join(problems) or "ok"

    async def readyz(self) -> tuple[bool, str]:
        problems = self._stalled() + await self._unwritable()
        down = self.agg.source.unavailable()
        if down:
            problems.append(f"source not connected: {down}")
        elif not self.agg.polled:
            problems.append("starting")
        return not problems, "; ".join(problems) or "ok"


async def serve(agg: Aggregator, compaction: Report, retention: RetentionTotals,
                address: str) -> asyncio.AbstractServer:
    checks = Checks(agg)
    return await metrics.serve(address, registry(agg, compaction, retention), checks.healthz, checks.readyz)
