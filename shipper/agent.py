"""The shipper's loop: follow files through their life, read, batch, deliver.

A file is followed by identity (shipper.identity: a fingerprint of its first
line, confirmed by the bytes before a position), not by name or inode. When
its path points elsewhere (rename rotation) or nowhere (deletion), the open
descriptor is read to the end, its unterminated last line included, and closed
``rotate_wait`` later; when it shrinks or its first line changes
(copytruncate), what was read stays with the copy: the copy goes on from the
same position, and the file holds a new source read from 0.

Rotated siblings (``path.1``, ``path.20261201-120000``, ``path-20261201``) are
looked at whenever a rotation or truncation is seen and once at start, so a
file rotated while the shipper was down, or created and rotated away between
two polls, is read to its end: from its checkpointed position when it has
one, else from 0 if it was written since the shipper's history began.

At most ``max_open_files`` files are held open (shipper.slots): a file idle at
its end is closed and opened again by path when it changes, its position
checked against its content like any other; a file that finds no descriptor
waits for one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import stat
import time
from collections import Counter

from shipper import identity
from shipper.batch import Batcher, Outgoing, Progress, Records
from shipper.buffer import DiskBuffer, SetAside
from shipper.checkpoint import STALE_AFTER_S, prepare_state_dir
from shipper.config import Settings
from shipper.delivery import Delivery
from shipper.discovery import excluded, matching_paths, rotated_siblings
from shipper.enrich import display_path, from_path, is_sidecar, sidecar_pod_uid
from shipper.files import Identified, TailedFile, TakeOver, Verdict, container_key, identify
from shipper.identity import Position
from shipper.positions import Positions
from shipper.records import RecordBuilder, detect_format, processing
from shipper.slots import EXHAUSTED, Closed, Slots, budget, raise_nofile_limit
from shipper.tail import Chunk, FileTail
from shipper.transport.base import Transport

log = logging.getLogger("loglake.shipper")
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip")
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
        self.slots = Slots(budget(cfg.max_open_files, raise_nofile_limit()), self.errors)
        self.idle: dict[str, Closed] = {}   # path -> a file closed while idle, opened again when it changes
        self._pod_uid = sidecar_pod_uid()
        # A sidecar shares its log directory with the app, which could link a file there to one only the
        # shipper may read (its TLS key): a sidecar follows no link (kubelet's are a node agent's only).
        self._links_refused: set[str] | None = set() if is_sidecar() else None
        self._to_adopt: set[str] = set()       # rotated files to read that found no descriptor yet
        # (device, inode) of files rotated away before they were read to their end (closed while idle, or
        # waiting for a descriptor) -> since when: found beside their path, they are read, whatever their age
        self._owed: dict[tuple[int, int], float] = {}
        self._matched: set[str] = set()        # what the include globs matched at the last look
        self.redactions: Counter[str] = Counter()
        self.proc = processing(cfg)
        self.active: dict[str, TailedFile] = {}   # path -> the file now at that path
        self.retired: list[TailedFile] = []       # renamed or deleted, read to the end then closed
        self._ignored: set[tuple[int, int]] = set()   # (dev, ino) of files that hold nothing to read
        self._misnamed: set[str] = set()              # paths not valid UTF-8, warned about once
        self._rescan: set[str] = set()                # paths whose rotated siblings to look at
        self._started = False
        self._full: list[Outgoing] = []                  # batches that filled up during a read pass
        self._stopping = asyncio.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)), "loglake-read")
        self.paused = False
        self.stats = Counter({"lines_read": 0, "bytes_read": 0, "files_opened": 0, "files_closed": 0,
                              "rotations": 0, "truncations": 0, "rotated_files_adopted": 0,
                              "files_idle_closed": 0})
        log.info("log files held open at most", extra={"max_open_files": self.slots.limit})

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # discovery -----------------------------------------------------------------

    def _open_inodes(self) -> set[tuple[int, int]]:
        return {(s.dev, s.ino) for s in self._sources()}

    def _open(self, path: str, now: float, follow: bool = True) -> TailedFile | None:
        try:
            tail = FileTail.open(path, follow=follow and self._links_refused is None)
            st = os.fstat(tail.fd)
        except OSError as e:
            if e.errno in EXHAUSTED:   # the file waits for a descriptor (shipper.slots)
                self.slots.exhausted(self._held(), e)
                return None
            self.errors["open_failed"] += 1
            log.warning("cannot open log file", extra={"path": display_path(path), "error": str(e)})
            return None
        if not stat.S_ISREG(st.st_mode):  # swapped for a FIFO or device between stat and open
            tail.close()
            return None
        self.stats["files_opened"] += 1
        return TailedFile(path, tail, st.st_dev, st.st_ino,
                      identity.scope(os.path.dirname(os.path.realpath(path)), self._pod_uid), now)

    def _retire(self, src: TailedFile, now: float) -> None:
        src.gone_since = now
        self.retired.append(src)

    def _intact(self, src: TailedFile) -> bool:
        """Does the file still hold what was read from it (no copytruncate since)?"""
        try:
            return (src.tail.size() >= src.tail.offset
                    and identity.fingerprint(src.tail.fd, src.directory) == src.fp)
        except OSError:
            return False

    def discover(self) -> None:
        now = time.monotonic()
        refused: set[str] | None = None if self._links_refused is None else set()
        matched = self._matched = matching_paths(self.cfg.include, self.cfg.exclude, refused)
        if refused is not None and self._links_refused is not None:
            for path in sorted(refused - self._links_refused):
                self.errors["link_refused"] += 1
                log.warning("a sidecar follows no symlink: not read", extra={"path": display_path(path)})
            self._links_refused = refused
        for path, src in list(self.active.items()):
            try:
                st = os.stat(path)
                same = st.st_ino == src.ino and st.st_dev == src.dev and path in matched
            except OSError:
                same = False
            if not same:
                del self.active[path]
                self._retire(src, now)
                self.stats["rotations"] += 1
                self._rescan.add(path)
            elif src.fp is not None and not self._intact(src):
                self._truncated(src)
        self._close_idle(now)
        wanted = self._wanted(matched)
        if not self._started:
            # rotated while we were down: siblings of what we tail and of what the checkpoint names
            self._started = True
            for path in sorted(matched | self.positions.paths()):
                self._rescan.add(path)
                if path not in matched and os.path.exists(path):
                    self._to_adopt.add(path)
        for path in sorted(self._rescan):
            self._to_adopt.update(filter(self._adoptable, rotated_siblings(path)))
        self._rescan.clear()
        self._make_room(len(wanted) + len(self._to_adopt))
        # rotated files first: the next rotation may delete them, while a live file keeps its bytes
        self._to_adopt = {path for path in sorted(self._to_adopt) if not self._adopt(path, now)}
        for path, ident in wanted:
            opened = self._open(path, now) if self.slots.free(self._held()) else None
            if opened is not None:
                opened.reopened = self.idle.pop(path, None) is not None
                self.active[path] = opened
            if opened is not None or self.slots.free(self._held()):
                self.slots.served(path)   # opened, or failed and warned about (tried again at the next look)
            else:
                self.slots.wait(path, now, ident)

    def _wanted(self, matched: set[str]) -> list[tuple[str, tuple[int, int]]]:
        """Paths to open (with the file each names), those waiting longest first: new files, and files closed
        while idle that changed. A file renamed or deleted while closed, or while waiting for a descriptor,
        is looked for beside its path and read (on from its position, if it has one)."""
        for path in [p for p in self.idle if p not in matched]:
            self._gone_while_closed(path)
        for path, (_, ident) in list(self.slots.waiting.items()):
            try:
                st = os.stat(path)
                moved = path not in matched or (st.st_dev, st.st_ino) != ident
            except OSError:
                moved = True
            if moved:
                self._owed[ident] = time.time()
                self._rescan.add(path)
                self.slots.served(path)
        opened = self._open_inodes() | self._ignored
        out = []
        for path in sorted(matched - set(self.active)):
            try:
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in opened:
                continue
            was = self.idle.get(path)
            if was is not None:
                if not was.same_file(st):
                    self._gone_while_closed(path)
                elif not was.changed(st):
                    continue
                else:
                    # Truncated while closed (copytruncate) leaves its copy beside it, and the file may
                    # already have grown past its old size: look beside it whenever it changed.
                    self._rescan.add(path)
            out.append((path, (st.st_dev, st.st_ino)))
        for path in set(self.slots.waiting) - {p for p, _ in out}:
            self.slots.served(path)
        return self.slots.order(out)

    def _gone_while_closed(self, path: str) -> None:
        """Renamed or deleted while closed: its rotated name, once found beside the path, is followed like a
        file renamed while open (read to its end and ``rotate_wait`` after), not left alone for holding
        nothing new yet, since the runtime may still write into it."""
        was = self.idle.pop(path)
        self._owed[(was.dev, was.ino)] = time.time()
        self.stats["rotations"] += 1
        self._rescan.add(path)

    def _held(self) -> int:
        """Log files open now (each source holds one descriptor)."""
        return len(self.active) + len(self.retired)

    def _closable(self) -> list[TailedFile]:
        """Files that may be closed and opened again later: live, read to their end, with nothing being
        assembled (whose start a position would need the descriptor to check). A renamed or deleted
        file is not among them: it could not be opened again."""
        return [s for s in self.active.values() if s.at_eof and not s.detached and s.tail.cut_from is None
                and (s.builder is None or s.builder.commit_floor() is None)]

    def _close_idle(self, now: float) -> None:
        idle = self.cfg.close_idle_after_ms / 1000
        if idle > 0:
            for src in self._closable():
                if now - src.read_at >= idle:
                    self._park(src)

    def _make_room(self, needed: int) -> None:
        """Close the least recently read files at their end until ``needed`` descriptors are free."""
        short = needed - self.slots.free(self._held())
        for src in sorted(self._closable(), key=lambda s: s.read_at) if short > 0 else ():
            if short <= 0:
                break
            short -= self._park(src)

    def _park(self, src: TailedFile) -> bool:
        """Close a file read to its end, remembering what it looked like; False if lines came since the
        last read (they are read first). The position stays known (released, then checkpointed),
        so opening the file again goes on from there once its bytes are checked (see _identify)."""
        closed = Closed.of(src.tail.fd, src.tail.offset, self.cfg.max_record_bytes + RUNTIME_PREFIX_ROOM,
                           src.source_id)
        if closed is None:
            return False
        if src.source_id is not None:
            self.positions.release(src.source_id, src.position())
        self.idle[src.path] = closed
        del self.active[src.path]
        src.tail.close()
        self.stats["files_idle_closed"] += 1
        return True

    def _adoptable(self, path: str) -> bool:
        return not (path.endswith(COMPRESSED) or excluded(path, self.cfg.exclude) or path in self._matched)

    def _adopt(self, path: str, now: float) -> bool:
        """Read a rotated file to its end, unless it holds nothing we have not read (see _identify).
        Only a regular file is taken: a symlink or FIFO planted beside a log is not followed. A file the
        globs match is tailed as such instead. False: no descriptor is free, try again later."""
        if not self._adoptable(path):
            return True
        try:
            st = os.lstat(path)
        except OSError:
            return True
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in self._open_inodes() | self._ignored:
            return True
        src = self._open(path, now, follow=False) if self.slots.free(self._held()) else None
        if src is None:
            return bool(self.slots.free(self._held()))
        # With no position of its own, a rotated file is read from 0 only if written since this shipper's
        # history began (not before it was installed) and since its oldest kept entry, or if we owe it a read.
        src.adopt_after = 0.0 if (src.dev, src.ino) in self._owed else self.positions.stale_before
        self._retire(src, now)
        return True

    def _drop(self, src: TailedFile) -> None:
        """A file with nothing to read: a copy of content read elsewhere, or older than our history."""
        if self.active.get(src.path) is src:
            del self.active[src.path]
        elif src in self.retired:
            self.retired.remove(src)
        self._ignored.add((src.dev, src.ino))
        src.tail.close()

    def _owner(self, sid: str, other: TailedFile) -> TailedFile | None:
        """The source, other than ``other``, that reads content ``sid`` (one found truncated is
        detached first, waiting for a copy)."""
        for src in self._sources():
            if src is not other and src.source_id == sid:
                if not src.detached and not self._intact(src):
                    self._truncated(src)
                return src
        return None

    def _take_over(self, owner: TailedFile, copy: TailedFile) -> None:
        """The copy of a truncated file's content: reading goes on through it where the original
        stopped, with the records being assembled kept (no line is cut in two)."""
        copy.tail.offset, copy.tail.cut_from = owner.tail.offset, owner.tail.cut_from
        owner.tail.close()
        owner.tail, owner.path, owner.dev, owner.ino = copy.tail, copy.path, copy.dev, copy.ino
        owner.directory, owner.detached, owner.at_eof = copy.directory, False, False
        owner.gone_since = time.monotonic()
        self.retired.remove(copy)
        self.stats["rotated_files_adopted"] += 1
        log.info("reading on in the copy of a truncated file", extra={"path": copy.name,
                                                                      "offset": owner.tail.offset})

    def _identify(self, src: TailedFile) -> bool | None:
        """Give a source its identity once its first line is complete (files.identify) and set it up.
        True: read on; False: not yet (first line incomplete); None: nothing to read in this file."""
        found = identify(src, self.cfg.node_name, lambda sid: self._owner(sid, src), self.positions,
                         rotated=src in self.retired, owed=(src.dev, src.ino) in self._owed)
        if isinstance(found, TakeOver):
            self._take_over(found.owner, src)
            return False
        if found is Verdict.NOT_YET:
            return False
        if not isinstance(found, Identified):
            return None
        sid, pos, fd = found.source_id, found.position, src.tail.fd
        if src.adopt_after is not None:
            self._owed.pop((src.dev, src.ino), None)
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

    def _sources(self) -> list[TailedFile]:
        return [*self.active.values(), *self.retired]

    def read_once(self) -> int:
        """One pass over every file; returns bytes read. Reading a file and building its records release
        the GIL, so files with data waiting are read in parallel, one per core; what each gives is then
        taken in turn on this thread. Files that were at their end are looked at here, cheaply."""
        for src in self._sources():
            if src.builder is None:
                found = self._identify(src)
                if found is None:
                    self._drop(src)
                elif not found:
                    src.at_eof = True
        # identifying one file may have found another truncated (it then waits for its new identity)
        ready = [src for src in self._sources() if src.builder is not None and not src.detached]
        busy = [src for src in ready if not src.at_eof]
        reads = list(self._pool.map(self._read, busy) if len(busy) > 1 else map(self._read, busy))
        reads += map(self._read, [src for src in ready if src.at_eof])
        return sum(self._take(*r) for r in reads)

    def _read(self, src: TailedFile) -> tuple[TailedFile, int, Chunk, Records | None, int]:
        """Touches only this source's own file and builder, so it may run in a worker thread."""
        assert src.builder is not None
        start = src.tail.offset
        chunk = src.tail.read(self.cfg.read_chunk_bytes, self.cfg.max_record_bytes + RUNTIME_PREFIX_ROOM)
        records, lines = src.builder.build(chunk) if chunk.data else (None, 0)
        return src, start, chunk, records, lines

    def _take(self, src: TailedFile, start: int, chunk: Chunk, records: Records | None, lines: int) -> int:
        assert src.builder is not None
        src.at_eof = chunk.at_eof
        read = chunk.end - start
        if read == 0:
            if chunk.at_eof and src.tail.size() < start:
                self._truncated(src)
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

    def _truncated(self, src: TailedFile) -> None:
        """copytruncate: the file shrank or begins anew. ``src`` keeps the content read so far and
        waits, detached, for its copy (a sibling found by the rescan) to go on from where it stopped;
        if none comes within ``rotate_wait_ms`` it is finished like a rotated file. What the file
        holds now is a new source read from 0."""
        if src.builder is None or src.source_id is None:
            return
        try:
            fd = os.dup(src.tail.fd)
        except OSError as e:   # no descriptor free: the truncation is seen again at the next look
            self.slots.exhausted(self._held(), e)
            return
        log.warning("file truncated; its new content is read from the start", extra={"path": src.name})
        self.stats["truncations"] += 1
        fresh = TailedFile(src.path, FileTail(src.path, fd, 0), src.dev, src.ino, src.directory, time.monotonic())
        if self.active.get(src.path) is src:
            self.active[src.path] = fresh
            self._retire(src, time.monotonic())
        else:
            self.retired.append(fresh)
            src.gone_since = time.monotonic()
        src.detached, src.at_eof = True, True
        self._ignored.clear()
        self._rescan.add(src.path)

    def _expire(self, now: float) -> None:
        """Flush timed-out multi-line events; close retired files read to their end."""
        for src in self._sources():
            if src.builder is not None:
                records = src.builder.expired()
                if records:
                    self._add(src, records)
        keep = []
        for src in self.retired:
            waited = now - (src.gone_since or now)
            if not (src.at_eof and waited >= self.cfg.rotate_wait_ms / 1000 and self._close(src)):
                keep.append(src)
        self.retired = keep

    def _close(self, src: TailedFile) -> bool:
        """The file is finished: its unterminated last line and any open event are shipped, and the
        lake is told its length (sealed). False if lines came in the meantime (read them first)."""
        if src.builder is not None and src.source_id is not None:
            rest = (Chunk(b"", src.tail.offset, src.tail.offset, True) if src.detached else
                    src.tail.read_rest(self.cfg.max_record_bytes + RUNTIME_PREFIX_ROOM))
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
            if (once and read == 0 and not self.paused and all(s.at_eof for s in self._sources())
                    and not self.slots.waiting and not self._to_adopt):
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
        self.discover()
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
        self.retired = [src for src in self.retired if not (src.at_eof and self._close(src))]
        for src in self._sources():
            if src.builder is not None and src.source_id is not None:
                self._add(src, src.builder.drain())
        await self.delivery.send(self._full + self.batcher.drain())
        self._full = []
        if not await self.delivery.drain(deadline):
            self.delivery.park()
            if self.delivery.denied is None:
                log.warning("shutdown grace period over; unacknowledged batches kept in the disk buffer")
        self._save()
        for src in self._sources():
            src.tail.close()
        self._pool.shutdown()
        log.info("shipper stopped", extra={**self.stats, **self.delivery.stats})

    def _save(self) -> None:
        """Save the checkpoint (shipper.positions); a deleted file's entry goes once its last batch is
        acknowledged, and a file closed while idle is still followed, so its entry must not go stale."""
        for ident in [i for i, t in self._owed.items() if time.time() - t > STALE_AFTER_S]:
            del self._owed[ident]   # deleted, not renamed: no rotated name will come
        try:
            self.positions.save({s.source_id for s in self._sources() if s.source_id}
                                | {c.source_id for c in self.idle.values() if c.source_id})
        except OSError as e:
            self.errors["checkpoint_write_failed"] += 1
            log.error("cannot save the checkpoint; retrying (reading resumes from the last saved one after a "
                      "restart, duplicates are dropped by record id)", extra={"error": str(e)})
