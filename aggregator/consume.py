"""The aggregator's loop: consume, decode, buffer per partition, write, commit.

Per partition, decoded records wait in a buffer until it is big or old enough;
then one Parquet file is written, named after the offsets it holds, and its
catalog entry is committed together with the position after its last offset.
A batch that cannot be decoded, or that no shipper could have sent
(aggregator.validate: a source of another node, an impossible offset, …), is
quarantined before it reaches dedup, and its offset counts as consumed; so is
whatever a transport could not read as a batch (aggregator.quarantine.Unreadable).
The data directory must be private to the aggregator's user (runtime.durable).
The source lengths batches report (schemas.wire positions) are committed with
the file, so ``verify`` knows how long every source is.
Background jobs (compaction every ``[tiers] compact_interval_s``, retention
every ``[retention] interval_s``) run in worker threads, each with its own
catalog connection and DuckDB.

``stalled_for`` tells the health check (aggregator.metrics) how long there has
been something to consume with nothing committed: the clock restarts at every
commit and at every poll that finds the source's lag at 0.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from aggregator import validate
from aggregator.dedup import Dedup
from aggregator.quarantine import Quarantine, Unreadable
from aggregator.source.base import Message, Source
from aggregator.tidy import tidy
from aggregator.writer import ParquetWriter
from lake.catalog.base import Catalog
from lake.catalog.model import TIERS, Tier
from lake.config import AggregatorConfig
from lake.keys import KeyRing, key_scope
from lake.storage import Storage
from runtime.durable import require_private_dir, safe_name
from runtime.errors import StorageError
from schemas import record, wire
from schemas.wire import WireError

log = logging.getLogger("loglake.aggregator")
HOT = Tier.HOT


@dataclass
class Periodic:
    """Background work: ``open`` builds the worker in a thread, ``run(worker, stop)`` does one pass."""
    name: str
    interval_s: int
    open: Callable[[], Any]
    run: Callable[[Any, threading.Event], None]
    close: Callable[[Any], None]
    runs: int = 0
    errors: int = 0


@dataclass
class PartitionBuffer:
    first_offset: int
    last_offset: int = -1
    created: float = field(default_factory=time.monotonic)
    tag: str = ""          # the first batch's checksum: tells a rewound offset range from the first one
    tables: list[pa.Table] = field(default_factory=list)
    rows: int = 0
    bytes: int = 0
    extents: dict[str, wire.Extent] = field(default_factory=dict)

    def reached(self, extents: list[wire.Extent]) -> None:
        for e in extents:
            old = self.extents.get(e.source_id)
            if old is None or e.length > old.length or (e.sealed and not old.sealed):
                self.extents[e.source_id] = wire.Extent(e.source_id, e.path, max(e.length, old.length if old else 0),
                                                        e.sealed or bool(old and old.sealed))


def hot_file_name(topic: str, partition: str, first: int, last: int, tag: str) -> str:
    """Derived from what the file holds: rewriting the same batches gives the same name, while a spool
    whose numbers went back (see aggregator.source.spool) gives other batches the same offsets, hence ``tag``."""
    return f"{HOT}/{safe_name(topic)}/{safe_name(partition)}/{first:020d}-{last:020d}-{tag}.parquet"


class Aggregator:
    def __init__(self, cfg: AggregatorConfig, source: Source, catalog: Catalog, keyring: KeyRing,
                 storage: Storage, jobs: tuple[Periodic, ...] = ()) -> None:
        self.cfg = cfg
        self.source = source
        self.catalog = catalog
        self.keyring = keyring
        self.storage = storage
        # Batches are decoded on the event loop while hot files are written in a worker thread, so both
        # cores are busy already; one DuckDB thread for the writes costs ~10% less CPU per record
        # (benchmarks/bench_aggregator.py: 4.22 instead of 4.69 CPU-s for 933,424 records).
        self.writer = ParquetWriter(storage, threads=1)
        self.layout = self.storage.layout(HOT)
        self.jobs = jobs
        self.quarantine = Quarantine(cfg.quarantine_dir)
        self.dedup = Dedup(catalog.source_marks(source.topic))
        self.buffers: dict[str, PartitionBuffer] = {}
        self._stopping = asyncio.Event()
        self.stats = {"batches_consumed": 0, "records_stored": 0, "files_written": 0, "batches_quarantined": 0}
        self.quarantined_by_reason: dict[str, int] = {}
        self.last_flush_unix = 0.0
        self.polled = False                  # the source answered a first poll
        self._progress_at = time.monotonic()  # the last commit, or the last poll with no lag

    def stop(self) -> None:
        self._stopping.set()

    def recover(self) -> int:
        """Remove files the catalog does not list (a write that crashed before its commit) and due deletes."""
        with self.storage.exclusive():
            return tidy(self.catalog, self.storage, TIERS)

    def add(self, msg: Message) -> None:
        buf = self.buffers.get(msg.partition)
        if buf is None:
            buf = self.buffers[msg.partition] = PartitionBuffer(first_offset=msg.offset,
                                                                tag=bytes(msg.value[16:20]).hex() or "0")
        buf.last_offset = msg.offset
        self.stats["batches_consumed"] += 1
        try:
            if isinstance(msg.value, Unreadable):
                raise WireError(msg.value.reason, msg.value.note)
            batch = wire.decode(msg.value)
            extents = wire.extents(batch)
            table = wire.to_table(batch)
            validate.check(batch, table, extents)
            table = self.dedup.filter(msg.partition, record.from_wire(table))
        except WireError as e:
            try:
                self.quarantine.put(self.source.topic, msg.partition, msg.offset, msg.value, e.reason, str(e))
            except OSError as oe:
                raise StorageError(f"cannot write quarantine file for {msg.partition} offset {msg.offset} in "
                                   f"{self.quarantine.root}: {oe.strerror}; free space or fix permissions, "
                                   "then start again") from None
            self.stats["batches_quarantined"] += 1
            self.quarantined_by_reason[e.reason] = self.quarantined_by_reason.get(e.reason, 0) + 1
            log.warning("batch quarantined", extra={"partition": msg.partition, "offset": msg.offset,
                                                    "reason": e.reason, "error": str(e)})
            return
        buf.reached(extents)
        if not table.num_rows:
            return
        buf.tables.append(table)
        buf.rows += table.num_rows
        buf.bytes += table.nbytes

    def _due(self, buf: PartitionBuffer, now: float) -> bool:
        return now - buf.created >= self.cfg.flush_interval_ms / 1000

    async def flush(self, partition: str) -> None:
        buf = self.buffers.pop(partition, None)
        if buf is None:
            return
        topic = self.source.topic
        new = None
        if buf.rows:
            rel = hot_file_name(topic, partition, buf.first_offset, buf.last_offset, buf.tag)
            table = pa.concat_tables(buf.tables)
            key = self.keyring.for_scope(key_scope(HOT, pc.min(table.column("time")).value))
            w = await asyncio.to_thread(self.writer.write_table, table, self.storage.target(HOT, rel), key,
                                        self.layout)
            new = w.new_file(path=rel, tier=HOT, topic=topic, partition=partition, first_offset=buf.first_offset,
                             last_offset=buf.last_offset, key_id=key.key_id, created_at=time.time_ns())
            self.stats["files_written"] += 1
            self.stats["records_stored"] += w.rows
        self.catalog.commit(new, topic, partition, buf.last_offset + 1, self.dedup.take_changed(partition),
                            list(buf.extents.values()))
        await self.source.commit(partition, buf.last_offset + 1)
        self.last_flush_unix = time.time()
        self._progress_at = time.monotonic()

    def stalled_for(self) -> float:
        """Seconds with batches waiting in the source and nothing committed; 0 when nothing waits."""
        if not any(self.source.lag().values()):
            return 0.0
        return time.monotonic() - self._progress_at

    async def flush_partitions(self, partitions: list[str]) -> None:
        for p in partitions:
            await self.flush(p)

    async def flush_due(self) -> None:
        now = time.monotonic()
        await self.flush_partitions([p for p, b in self.buffers.items() if self._due(b, now)])

    async def every(self, job: Periodic, stop: threading.Event) -> None:
        """Run ``job`` every ``interval_s``; a failed pass is logged and retried at the next interval."""
        worker = None
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), job.interval_s)
                break
            except TimeoutError:
                pass
            try:
                if worker is None:
                    worker = await asyncio.to_thread(job.open)
                await asyncio.to_thread(job.run, worker, stop)
                job.runs += 1
            except Exception as e:  # noqa: BLE001 - background work must not stop consumption
                job.errors += 1
                log.error(f"{job.name} failed; retrying at the next interval", extra={"error": str(e)})
        if worker is not None:
            job.close(worker)

    async def run(self, once: bool = False, poll_timeout: float = 0.2) -> None:
        require_private_dir(self.cfg.data_dir, "aggregator data directory")
        self.recover()
        self.source.on_revoke = self.flush_partitions
        await self.source.start(lambda: self.catalog.positions(self.source.topic))
        stop_jobs = threading.Event()
        background = [asyncio.create_task(self.every(j, stop_jobs)) for j in self.jobs
                      if j.interval_s > 0 and not once]
        idle_deadline = time.monotonic() + 60
        while not self._stopping.is_set():
            try:
                messages = await self.source.poll(poll_timeout)
            except Exception:   # denied (AccessDeniedError): stop the jobs, close the client, report
                stop_jobs.set()
                for task in background:
                    task.cancel()
                await self.source.close()
                raise
            self.polled = True
            if not any(self.source.lag().values()):
                self._progress_at = time.monotonic()
            if messages:
                idle_deadline = time.monotonic() + 60
            for msg in messages:
                pending = self.buffers.get(msg.partition)
                if pending is not None and msg.offset <= pending.last_offset:
                    await self.flush(msg.partition)  # the spool went back (aggregator.source.spool): a new range
                self.add(msg)
                buf = self.buffers[msg.partition]
                if buf.rows >= self.cfg.flush_max_records or buf.bytes >= self.cfg.flush_max_bytes:
                    await self.flush(msg.partition)
            await self.flush_due()
            if once and not messages and self.source.caught_up():
                break
            if once and not messages and time.monotonic() > idle_deadline:
                log.warning("nothing to consume for 60 s and not caught up; stopping --once run")
                break
        stop_jobs.set()
        for task in background:
            await task  # a pass in progress finishes its current step (each is atomic)
        await self.flush_partitions(list(self.buffers))
        await self.source.close()
        log.info("aggregator stopped", extra={**self.stats, "duplicates_dropped": self.dedup.dropped})

