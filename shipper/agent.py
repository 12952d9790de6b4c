"""The shipper's loop: follow files through their life, read, batch, deliver.

A file is followed by identity, not by name. When its path points elsewhere
(rename rotation) or nowhere (deletion), the open descriptor is read to the
end and closed ``rotate_wait`` later; when it shrinks (copytruncate), it is
read again from the start as a new source. When a rotation is seen, the
rotated siblings of the path are checked too, so a file that was created and
rotated away between two polls is still read.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fnmatch
import glob
import logging
import os
import stat
import time
from collections import Counter
from dataclasses import dataclass

from shipper.batch import Batch, Batcher, Records
from shipper.buffer import DiskBuffer
from shipper.checkpoint import Checkpoints
from shipper.config import Settings
from shipper.delivery import Delivery
from shipper.enrich import K8sMeta, from_path
from shipper.fingerprint import identify
from shipper.records import RecordBuilder, detect_format, processing
from shipper.tail import Chunk, FileTail
from shipper.transport.base import Transport

log = logging.getLogger("loglake.shipper")
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip")
# A physical line is cut a little past the record limit, so the runtime's own
# prefix (CRI timestamp, stream, tag) does not eat into the record's text.
RUNTIME_PREFIX_ROOM = 128


@dataclass
class Source:
    path: str
    tail: FileTail
    ino: int
    opened_at: float
    source_id: str | None = None      # None until the first line is complete
    builder: RecordBuilder | None = None
    key: bytes = b""
    at_eof: bool = False
    gone_since: float | None = None   # the path no longer leads to this file
    from_start: bool = False          # truncated: read from 0 whatever the checkpoint says


def container_key(meta: K8sMeta, path: str) -> bytes:
    if meta.namespace and meta.pod and meta.container:
        return f"{meta.namespace}/{meta.pod}/{meta.container}".encode()
    return path.encode()


class Agent:
    def __init__(self, settings: Settings, transport: Transport) -> None:
        cfg = self.cfg = settings.shipper
        self.transport = transport
        self.checkpoints = Checkpoints(cfg.data_dir / "checkpoints.json")
        self.delivery = Delivery(transport, self.checkpoints, DiskBuffer(cfg.data_dir / "buffer", cfg.buffer_max_bytes),
                                 node=cfg.node_name, zstd_level=cfg.zstd_level,
                                 max_inflight=cfg.max_inflight_batches, ack_timeout_s=cfg.ack_timeout_ms / 1000)
        self.batcher = Batcher(cfg.batch_max_bytes, cfg.batch_max_wait_ms / 1000)
        self.errors: Counter[str] = Counter()
        self.redactions: Counter[str] = Counter()
        self.proc = processing(cfg)
        self.active: dict[str, Source] = {}   # path -> the file now at that path
        self.retired: list[Source] = []       # renamed or deleted, read to the end then closed
        self._resume = self.delivery.buffered_marks()
        self._full: list[Batch] = []                  # batches that filled up during a read pass
        self._deleted: list[str] = []                 # sources whose checkpoint goes once delivered
        self._stopping = asyncio.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)), "loglake-read")
        self.paused = False
        self.stats = Counter({"lines_read": 0, "bytes_read": 0, "files_opened": 0, "files_closed": 0,
                              "rotations": 0, "truncations": 0})

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # discovery -----------------------------------------------------------------

    def _excluded(self, path: str) -> bool:
        return any(fnmatch.fnmatch(path, ex) for ex in self.cfg.exclude)

    def _matching_paths(self) -> set[str]:
        """Included files, each once: /var/log/containers/*.log symlinks and the /var/log/pods files they
        point to are one file, tailed under its real path when the globs match both."""
        paths = {p for pattern in self.cfg.include for p in glob.glob(str(pattern), recursive=True)}
        chosen: dict[tuple[int, int], str] = {}
        for p in sorted(paths):
            try:
                st = os.stat(p)
            except OSError:
                continue
            if self._excluded(p) or not stat.S_ISREG(st.st_mode):
                continue
            seen = chosen.get((st.st_dev, st.st_ino))
            if seen is None or (os.path.islink(seen) and not os.path.islink(p)):
                chosen[(st.st_dev, st.st_ino)] = p
        return set(chosen.values())

    def _open(self, path: str, now: float) -> Source | None:
        try:
            tail = FileTail.open(path)
        except OSError as e:
            self.errors["open_failed"] += 1
            log.warning("cannot open log file", extra={"path": path, "error": str(e)})
            return None
        self.stats["files_opened"] += 1
        return Source(path, tail, os.fstat(tail.fd).st_ino, now)

    def _retire(self, src: Source, now: float) -> None:
        src.gone_since = now
        self.retired.append(src)

    def discover(self) -> None:
        now = time.monotonic()
        matched = self._matching_paths()
        for path, src in list(self.active.items()):
            try:
                st = os.stat(path)
                same = st.st_ino == src.ino and path in matched
            except OSError:
                same = False
            if not same:
                del self.active[path]
                self._retire(src, now)
                self.stats["rotations"] += 1
                self._scan_rotated(path, src.opened_at, now)
        for path in sorted(matched - set(self.active)):
            src = self._open(path, now)
            if src is not None:
                self.active[path] = src

    def _scan_rotated(self, path: str, since: float, now: float) -> None:
        """Rotated siblings (``path.1``, ``path.20261124-1``) written since we began on ``path``:
        one of them may be a file we never saw because it came and went between two polls."""
        open_inodes = {s.ino for s in [*self.active.values(), *self.retired]}
        wall_since = time.time() - (now - since)
        for sib in glob.glob(glob.escape(path) + ".*"):
            if sib.endswith(COMPRESSED) or self._excluded(sib):
                continue
            try:
                st = os.stat(sib)
            except OSError:
                continue
            if st.st_ino in open_inodes or st.st_mtime < wall_since:
                continue
            src = self._open(sib, now)
            if src is not None:
                log.info("reading a file rotated between polls", extra={"path": sib})
                self._retire(src, now)

    def _identify(self, src: Source) -> bool:
        """Give a source its identity once its first line is complete; resume from the checkpoint."""
        fid = identify(src.tail.fd)
        if fid is None:
            return False
        sid = fid.source_id(self.cfg.node_name)
        offset = 0 if src.from_start else max(self.checkpoints.offset(sid) or 0, self._resume.get(sid, ("", 0))[1])
        src.tail.offset = offset if offset <= src.tail.size() else 0
        first_line = os.pread(src.tail.fd, 4096, 0).split(b"\n", 1)[0]
        meta = from_path(src.path)
        src.source_id, src.key = sid, container_key(meta, src.path)
        src.builder = RecordBuilder(self.proc, source_id=sid, path=src.path, meta=meta,
                                    fmt=detect_format(first_line), errors=self.errors, redactions=self.redactions)
        log.info("tailing file", extra={"path": src.path, "source_id": sid, "offset": src.tail.offset,
                                        "format": src.builder.fmt})
        return True

    # reading -----------------------------------------------------------------

    def _sources(self) -> list[Source]:
        return [*self.active.values(), *self.retired]

    def read_once(self) -> int:
        """One pass over every file; returns bytes read. Reading a file and building its records release
        the GIL, so files with data waiting are read in parallel, one per core; what each gives is then
        taken in turn on this thread. Files that were at their end are looked at here, cheaply."""
        ready: list[Source] = []
        for src in self._sources():
            if src.builder is None and not self._identify(src):
                src.at_eof = True
            else:
                ready.append(src)
        busy = [src for src in ready if not src.at_eof]
        reads = list(self._pool.map(self._read, busy) if len(busy) > 1 else map(self._read, busy))
        reads += map(self._read, [src for src in ready if src.at_eof])
        return sum(self._take(*r) for r in reads)

    def _read(self, src: Source) -> tuple[Source, int, Chunk, Records | None, int]:
        """Touches only this source's own file and builder, so it may run in a worker thread."""
        assert src.builder is not None
        start = src.tail.offset
        chunk = src.tail.read(self.cfg.read_chunk_bytes, self.cfg.max_record_bytes + RUNTIME_PREFIX_ROOM)
        records, lines = src.builder.build(chunk) if chunk.data else (None, 0)
        return src, start, chunk, records, lines

    def _take(self, src: Source, start: int, chunk: Chunk, records: Records | None, lines: int) -> int:
        assert src.builder is not None
        src.at_eof = chunk.at_eof
        read = chunk.end - start
        if read == 0:
            if chunk.at_eof and src.tail.size() < start:
                self._truncated(src)
            return 0
        src.builder.count()
        self.stats["lines_read"] += lines
        self.stats["bytes_read"] += read
        self._add(src, records, chunk.end)
        return read

    def _add(self, src: Source, records: Records | None, end: int) -> None:
        assert src.builder is not None and src.source_id is not None
        floors = [f for f in (src.builder.commit_floor(), src.tail.cut_from) if f is not None]
        commit = min([end, *floors])
        self._full += self.batcher.add(src.key, records, src.source_id, src.path, commit)

    def _truncated(self, src: Source) -> None:
        """copytruncate: the file shrank under us; what it holds now is a new source from offset 0."""
        assert src.builder is not None
        self._add(src, src.builder.drain(), src.tail.offset)
        log.warning("file truncated; reading it again from the start", extra={"path": src.path})
        self.stats["truncations"] += 1
        src.tail.offset, src.builder, src.source_id, src.from_start = 0, None, None, True

    def _expire(self, now: float) -> None:
        """Flush timed-out multi-line events; close retired files read to their end."""
        for src in self._sources():
            if src.builder is not None:
                records = src.builder.expired()
                if records:
                    self._add(src, records, src.tail.offset)
        keep = []
        for src in self.retired:
            waited = now - (src.gone_since or now)
            if src.at_eof and waited >= self.cfg.rotate_wait_ms / 1000:
                self._close(src)
            else:
                keep.append(src)
        self.retired = keep

    def _close(self, src: Source) -> None:
        if src.builder is not None:
            self._add(src, src.builder.drain(), src.tail.offset)
        deleted = os.fstat(src.tail.fd).st_nlink == 0
        src.tail.close()
        self.stats["files_closed"] += 1
        if deleted and src.source_id:
            self._deleted.append(src.source_id)

    # loop -----------------------------------------------------------------

    async def run(self, once: bool = False) -> None:
        poll = self.cfg.poll_interval_ms / 1000
        last_save = last_discover = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if now - last_discover >= poll:
                self.discover()
                last_discover = now
            self._set_paused()
            read = 0 if self.paused else self.read_once()
            self._expire(time.monotonic())
            batches, self._full = self._full + self.batcher.due(), []
            await self.delivery.send(batches)
            if time.monotonic() - last_save >= 1.0:
                self._save()
                last_save = time.monotonic()
            if once and read == 0 and not self.paused and all(s.at_eof for s in self._sources()):
                break
            if read == 0:
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=poll)
                except asyncio.TimeoutError:
                    pass
        await self.shutdown(deadline=None if once and not self._stopping.is_set()
                            else time.monotonic() + self.cfg.shutdown_grace_ms / 1000)

    def _set_paused(self) -> None:
        full = self.delivery.buffer.full
        if full != self.paused:
            self.paused = full
            if full:
                log.warning("disk buffer full; reading paused until it drains (files stay on disk)",
                            extra={"buffer_bytes": self.delivery.buffer.bytes})
            else:
                log.info("disk buffer has room; reading resumed")

    async def shutdown(self, deadline: float | None) -> None:
        """Flush, wait for acknowledgements (until ``deadline``), save the checkpoint."""
        await self.delivery.send(self._full + self.batcher.drain())
        self._full = []
        if not await self.delivery.drain(deadline):
            self.delivery.park()
            log.warning("shutdown grace period over; unacknowledged batches kept in the disk buffer")
        self._save()
        for src in self._sources():
            src.tail.close()
        self._pool.shutdown()
        log.info("shipper stopped", extra={**self.stats, **self.delivery.stats})

    def _save(self) -> None:
        """Save the checkpoint; a deleted file's entry goes once its last batch is acknowledged."""
        pending = {sid for p in self.delivery.queue for sid in p.marks}
        for sid in [s for s in self._deleted if s not in pending]:
            self.checkpoints.forget(sid)
            self._deleted.remove(sid)
        self.checkpoints.prune({s.source_id for s in self._sources() if s.source_id} | pending)
        self.checkpoints.save()
