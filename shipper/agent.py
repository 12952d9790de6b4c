"""The shipper's loop: look at the files (shipper.followed), read them, batch, deliver, save.

Each turn reads every followed file that has data (in parallel, one per core), builds its records
(shipper.records, the native core), hands them to the batcher, sends what is due, flushes timed-out
multi-line events and finishes rotated files read to their end ``rotate_wait`` after they went. A file
is given its identity once its first line is complete (shipper.files.identify); where reading it
goes on from is shipper.positions' answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
from collections import Counter

from shipper import identity
from shipper.batch import Batcher, Outgoing, Progress, Records
from shipper.buffer import DiskBuffer, SetAside
from shipper.checkpoint import prepare_state_dir
from shipper.config import Settings
from shipper.delivery import Delivery
from shipper.enrich import from_path
from shipper.files import Identified, TailedFile, TakeOver, Verdict, container_key, identify
from shipper.followed import FollowedFiles
from shipper.identity import Position
from shipper.positions import Positions
from shipper.records import RecordBuilder, detect_format, processing
from shipper.tail import Chunk
from shipper.transport.base import Transport

log = logging.getLogger("loglake.shipper")
# A physical line is cut a little past the record limit, so the runtime's own
# prefix (CRI timestamp, stream, tag) does not eat into the record's text.
RUNTIME_PREFIX_ROOM = 128


class Agent:
    def __init__(self, settings: Settings, transport: Transport) -> None:
        cfg = self.cfg = settings.shipper
        self.transport = transport
        prepare_state_dir(cfg.data_dir)
        self.positions = Positions(cfg.data_dir / "checkpoints.json")
        self.delivery = Delivery(transport, self.positions, DiskBuffer(cfg.data_dir / "buffer", cfg.buffer_max_bytes),
                                 SetAside(cfg.data_dir / "refused", cfg.node_name),
                                 node=cfg.node_name, zstd_level=cfg.zstd_level,
                                 max_inflight=cfg.max_inflight_batches, ack_timeout_s=cfg.ack_timeout_ms / 1000)
        self.batcher = Batcher(cfg.batch_max_bytes, cfg.batch_max_wait_ms / 1000, cfg.report_interval_ms / 1000)
        self.errors: Counter[str] = Counter()
        self.stats = Counter({"lines_read": 0, "bytes_read": 0, "files_opened": 0, "files_closed": 0,
                              "rotations": 0, "truncations": 0, "rotated_files_adopted": 0,
                              "files_idle_closed": 0})
        self.max_line = cfg.max_record_bytes + RUNTIME_PREFIX_ROOM
        self.files = FollowedFiles(cfg, self.positions, self.max_line, self.stats, self.errors)
        self.redactions: Counter[str] = Counter()
        self.proc = processing(cfg)
        self._misnamed: set[str] = set()              # paths not valid UTF-8, warned about once
        self._full: list[Outgoing] = []               # batches that filled up during a read pass
        self._stopping = asyncio.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)), "loglake-read")
        self.paused = False
        log.info("log files held open at most", extra={"max_open_files": self.files.slots.limit})

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _identify(self, src: TailedFile) -> bool | None:
        """Give a source its identity once its first line is complete (files.identify) and set it up.
        True: read on; False: not yet (first line incomplete); None: nothing to read in this file."""
        found = identify(src, self.cfg.node_name, lambda sid: self.files.owner(sid, src), self.positions,
                         rotated=src in self.files.retired, owed=self.files.owed(src))
        if isinstance(found, TakeOver):
            self.files.take_over(found.owner, src)
            return False
        if found is Verdict.NOT_YET:
            return False
        if not isinstance(found, Identified):
            return None
        sid, pos, fd = found.source_id, found.position, src.tail.fd
        if src.adopt_after is not None:
            self.files.paid(src)
        src.tail.offset, src.window, src.fp = pos.offset, pos.window, found.fingerprint
        if src.adopt_after is not None:
            self.stats["rotated_files_adopted"] += 1
            log.info("reading a rotated file", extra={"path": src.name, "offset": pos.offset})
        first_line = os.pread(fd, 4096, 0).split(b"\n", 1)[0]
        if src.name != src.path and src.path not in self._misnamed:
            self._misnamed.add(src.path)
            log.warning("file name is not valid UTF-8; shipped with U+FFFD in place of its bad bytes in source_path",
                        extra={"path": src.name})
        meta = from_path(src.path)
        src.source_id, src.key = sid, container_key(meta, src.path)
        src.builder = RecordBuilder(self.proc, source_id=sid, path=src.name, meta=meta,
                                    fmt=detect_format(first_line), errors=self.errors, redactions=self.redactions)
        if pos.offset:
            self.batcher.report_later(src.key, sid, Progress(src.name, pos, src.builder.source))
        (log.debug if src.reopened else log.info)("tailing file", extra={
            "path": src.name, "source_id": sid, "offset": src.tail.offset, "format": src.builder.fmt})
        return True

    # reading -----------------------------------------------------------------

    def read_once(self) -> int:
        """One pass over every file; returns bytes read. Reading a file and building its records release
        the GIL, so files with data waiting are read in parallel, one per core; what each gives is then
        taken in turn on this thread. Files that were at their end are looked at here, cheaply."""
        for src in self.files.sources():
            if src.builder is None:
                found = self._identify(src)
                if found is None:
                    self.files.drop(src)
                elif not found:
                    src.at_eof = True
        # identifying one file may have found another truncated (it then waits for its new identity)
        ready = [src for src in self.files.sources() if src.builder is not None and not src.detached]
        busy = [src for src in ready if not src.at_eof]
        reads = list(self._pool.map(self._read, busy) if len(busy) > 1 else map(self._read, busy))
        reads += map(self._read, [src for src in ready if src.at_eof])
        return sum(self._take(*r) for r in reads)

    def _read(self, src: TailedFile) -> tuple[TailedFile, int, Chunk, Records | None, int]:
        """Touches only this source's own file and builder, so it may run in a worker thread."""
        assert src.builder is not None
        start = src.tail.offset
        chunk = src.tail.read(self.cfg.read_chunk_bytes, self.max_line)
        records, lines = src.builder.build(chunk) if chunk.data else (None, 0)
        return src, start, chunk, records, lines

    def _take(self, src: TailedFile, start: int, chunk: Chunk, records: Records | None, lines: int) -> int:
        assert src.builder is not None
        src.at_eof = chunk.at_eof
        read = chunk.end - start
        if read == 0:
            if chunk.at_eof and src.tail.size() < start:
                self.files.truncated(src)
            return 0
        # the window of the new position, from the bytes just read when they reach back far enough
        data = chunk.data
        src.window = (identity.window_of(data) if len(data) >= identity.WINDOW_BYTES or chunk.start == 0
                      else identity.window(src.tail.fd, chunk.end))
        src.builder.count()
        src.read_at = time.monotonic()
        self.stats["lines_read"] += lines
        self.stats["bytes_read"] += read
        self._add(src, records)
        return read

    def _add(self, src: TailedFile, records: Records | None, sealed: bool = False) -> None:
        """Records read up to ``src.tail.offset``; the checkpoint may move to the start of anything
        still being assembled."""
        assert src.builder is not None and src.source_id is not None
        floors = [f for f in (src.builder.commit_floor(), src.tail.cut_from) if f is not None]
        commit = min([src.tail.offset, *floors])
        pos = src.position() if commit == src.tail.offset else Position(commit, identity.window(src.tail.fd, commit))
        self._full += self.batcher.add(src.key, records, src.source_id,
                                       Progress(src.name, pos, src.builder.source, sealed))

    def _expire(self, now: float) -> None:
        """Flush timed-out multi-line events; finish retired files read to their end."""
        for src in self.files.sources():
            if src.builder is not None:
                records = src.builder.expired()
                if records:
                    self._add(src, records)
        self.files.finish(self._close, now, self.cfg.rotate_wait_ms / 1000)

    def _close(self, src: TailedFile) -> bool:
        """The file is finished: its unterminated last line and any open event are shipped, and the
        lake is told its length (sealed). False if lines came in the meantime (read them first)."""
        if src.builder is not None and src.source_id is not None:
            rest = (Chunk(b"", src.tail.offset, src.tail.offset, True) if src.detached else
                    src.tail.read_rest(self.max_line))
            if not rest.at_eof:
                src.at_eof = False
                return False
            if rest.data:
                records, lines = src.builder.build(rest)
                self._take(src, rest.start, rest, records, lines)
            self._add(src, src.builder.drain(), sealed=True)
            self._full += self.batcher.seal(src.key)
            self.positions.release(src.source_id, src.position())
        deleted = os.fstat(src.tail.fd).st_nlink == 0
        src.tail.close()
        self.stats["files_closed"] += 1
        if deleted and src.source_id:
            self.positions.deleted(src.source_id)
        return True

    # loop -----------------------------------------------------------------

    async def run(self, once: bool = False) -> None:
        """Follow, read and deliver until stopped (or, ``once``, until everything present is delivered).
        A transport that denies access ends the run with AccessDeniedError once the checkpoint is saved."""
        poll = self.cfg.poll_interval_ms / 1000
        last_save = last_discover = 0.0
        while not self._stopping.is_set() and self.delivery.denied is None:
            now = time.monotonic()
            if now - last_discover >= poll:
                self.files.look()
                last_discover = now
            self._set_paused()
            read = 0 if self.paused else self.read_once()
            self._expire(time.monotonic())
            batches, self._full = self._full + self.batcher.due(), []
            await self.delivery.send(batches)
            if time.monotonic() - last_save >= 1.0:
                self._save()
                last_save = time.monotonic()
            if (once and read == 0 and not self.paused and all(s.at_eof for s in self.files.sources())
                    and self.files.all_waiting_served):
                break
            if read == 0:
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=poll)
                except asyncio.TimeoutError:
                    pass
        stopped, grace = self._stopping.is_set(), self.cfg.shutdown_grace_ms / 1000
        end = time.monotonic() + grace
        if self.delivery.denied is not None:
            end = time.monotonic()   # nothing more gets through: keep it all on disk
        elif stopped:
            await self._last_look(end - grace / 2)
        await self.shutdown(deadline=None if once and not stopped and self.delivery.denied is None else end)
        # denied in the loop, or while shutting down (--once sends its last batches there)
        if self.delivery.denied is not None:
            raise self.delivery.denied

    async def _last_look(self, until: float) -> None:
        """Stopped (SIGTERM): read what was written since the last turn, new files too, for half the grace
        period (the other half is for acknowledgements). A sidecar is stopped once its app has exited, and
        its files go with the pod: the app's last lines are those."""
        self.files.look()
        while time.monotonic() < until and not self.paused and self.read_once():
            batches, self._full = self._full + self.batcher.due(), []
            await self.delivery.send(batches)
            self._set_paused()

    def _set_paused(self) -> None:
        full = self.delivery.buffer.full or self.delivery.held
        if full != self.paused:
            self.paused = full
            if full:
                log.warning("disk buffer full or not writable; reading paused until it drains (files stay on disk)",
                            extra={"buffer_bytes": self.delivery.buffer.bytes})
            else:
                log.info("disk buffer has room; reading resumed")

    async def shutdown(self, deadline: float | None) -> None:
        """Ship what is assembled (open multi-line and partial events too), wait for acknowledgements
        (until ``deadline``), save the checkpoint. Rotated files read to their end are finished (closed
        and sealed) now; a restart would find them again and read whatever comes after."""
        self.files.finish(self._close, time.monotonic(), 0.0)
        for src in self.files.sources():
            if src.builder is not None and src.source_id is not None:
                self._add(src, src.builder.drain())
        await self.delivery.send(self._full + self.batcher.drain())
        self._full = []
        if not await self.delivery.drain(deadline):
            self.delivery.park()
            if self.delivery.denied is None:
                log.warning("shutdown grace period over; unacknowledged batches kept in the disk buffer")
        self._save()
        for src in self.files.sources():
            src.tail.close()
        self._pool.shutdown()
        log.info("shipper stopped", extra={**self.stats, **self.delivery.stats})

    def _save(self) -> None:
        """Save the checkpoint (shipper.positions); a deleted file's entry goes once its last batch is
        acknowledged, and a file closed while idle is still followed, so its entry must not go stale."""
        try:
            self.positions.save(self.files.source_ids())
        except OSError as e:
            self.errors["checkpoint_write_failed"] += 1
            log.error("cannot save the checkpoint; retrying (reading resumes from the last saved one after a "
                      "restart, duplicates are dropped by record id)", extra={"error": str(e)})
