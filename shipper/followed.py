"""The files the shipper follows, through rotation, truncation, idleness and the descriptor budget.

A file is followed by identity (shipper.identity: a fingerprint of its first
line, confirmed by the bytes before a position), not by name or inode. When
its path points elsewhere (rename rotation) or nowhere (deletion), the open
descriptor is kept (``retired``) so it is read to the end, its unterminated
last line included, and closed ``rotate_wait`` later by the agent; when it
shrinks or its first line changes (copytruncate), what was read stays with the
copy: the copy goes on from the same position, and the file holds a new source
read from 0.

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

import logging
import os
import stat
import time
from collections import Counter
from collections.abc import Callable

from shipper import identity
from shipper.checkpoint import STALE_AFTER_S
from shipper.config import ShipperConfig
from shipper.discovery import excluded, matching_paths, rotated_siblings
from shipper.enrich import display_path, is_sidecar, sidecar_pod_uid
from shipper.files import TailedFile
from shipper.positions import Positions
from shipper.slots import EXHAUSTED, Closed, Slots, budget, raise_nofile_limit
from shipper.tail import FileTail

log = logging.getLogger("loglake.shipper")
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip")


class FollowedFiles:
    """Every file followed now: at its path (``active``), renamed, deleted or found beside a path and
    read to its end (``retired``), closed while idle (``idle``), or waiting for a descriptor."""

    def __init__(self, cfg: ShipperConfig, positions: Positions, max_line: int,
                 stats: Counter[str], errors: Counter[str]) -> None:
        self.cfg, self.positions, self.max_line = cfg, positions, max_line
        self.stats, self.errors = stats, errors
        self.slots = Slots(budget(cfg.max_open_files, raise_nofile_limit()), errors)
        self.active: dict[str, TailedFile] = {}   # path -> the file now at that path
        self.retired: list[TailedFile] = []       # renamed or deleted, read to the end then closed
        self.idle: dict[str, Closed] = {}         # path -> a file closed while idle, opened again when it changes
        self._pod_uid = sidecar_pod_uid()
        # A sidecar shares its log directory with the app, which could link a file there to one only the
        # shipper may read (its TLS key): a sidecar follows no link (kubelet's are a node agent's only).
        self._links_refused: set[str] | None = set() if is_sidecar() else None
        self._to_adopt: set[str] = set()       # rotated files to read that found no descriptor yet
        # (device, inode) of files rotated away before they were read to their end (closed while idle, or
        # waiting for a descriptor) -> since when: found beside their path, they are read, whatever their age
        self._owed: dict[tuple[int, int], float] = {}
        self._matched: set[str] = set()        # what the include globs matched at the last look
        self._ignored: set[tuple[int, int]] = set()   # (dev, ino) of files that hold nothing to read
        self._rescan: set[str] = set()                # paths whose rotated siblings to look at
        self._started = False

    def sources(self) -> list[TailedFile]:
        return [*self.active.values(), *self.retired]

    def held(self) -> int:
        """Log files open now (each source holds one descriptor)."""
        return len(self.active) + len(self.retired)

    @property
    def all_waiting_served(self) -> bool:
        """No file waits for a descriptor, no rotated file waits to be read."""
        return not self.slots.waiting and not self._to_adopt

    def owed(self, src: TailedFile) -> bool:
        """Was the file rotated away before it was read to its end (so it is read, whatever its age)?"""
        return (src.dev, src.ino) in self._owed

    def paid(self, src: TailedFile) -> None:
        """A rotated file is read: nothing more is owed to it."""
        self._owed.pop((src.dev, src.ino), None)

    def source_ids(self) -> set[str]:
        """The content ids still followed (a file closed while idle too): their checkpoint entries stay."""
        return ({s.source_id for s in self.sources() if s.source_id}
                | {c.source_id for c in self.idle.values() if c.source_id})

    # looking at the paths -----------------------------------------------------

    def look(self) -> None:
        """Match the include globs again: follow rotations, truncations and new files, close idle ones."""
        now = time.monotonic()
        for ident in [i for i, t in self._owed.items() if time.time() - t > STALE_AFTER_S]:
            del self._owed[ident]   # deleted, not renamed: no rotated name will come
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
                self.truncated(src)
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
            opened = self._open(path, now) if self.slots.free(self.held()) else None
            if opened is not None:
                opened.reopened = self.idle.pop(path, None) is not None
                self.active[path] = opened
            if opened is not None or self.slots.free(self.held()):
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

    def _open_inodes(self) -> set[tuple[int, int]]:
        return {(s.dev, s.ino) for s in self.sources()}

    def _open(self, path: str, now: float, follow: bool = True) -> TailedFile | None:
        try:
            tail = FileTail.open(path, follow=follow and self._links_refused is None)
            st = os.fstat(tail.fd)
        except OSError as e:
            if e.errno in EXHAUSTED:   # the file waits for a descriptor (shipper.slots)
                self.slots.exhausted(self.held(), e)
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

    # closing while idle ---------------------------------------------------------

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
        short = needed - self.slots.free(self.held())
        for src in sorted(self._closable(), key=lambda s: s.read_at) if short > 0 else ():
            if short <= 0:
                break
            short -= self._park(src)

    def _park(self, src: TailedFile) -> bool:
        """Close a file read to its end, remembering what it looked like; False if lines came since the
        last read (they are read first). The position stays known (released, then checkpointed),
        so opening the file again goes on from there once its bytes are checked (files.identify)."""
        closed = Closed.of(src.tail.fd, src.tail.offset, self.max_line, src.source_id)
        if closed is None:
            return False
        if src.source_id is not None:
            self.positions.release(src.source_id, src.position())
        self.idle[src.path] = closed
        del self.active[src.path]
        src.tail.close()
        self.stats["files_idle_closed"] += 1
        return True

    # rotated files, copies and truncation ---------------------------------------

    def _adoptable(self, path: str) -> bool:
        return not (path.endswith(COMPRESSED) or excluded(path, self.cfg.exclude) or path in self._matched)

    def _adopt(self, path: str, now: float) -> bool:
        """Read a rotated file to its end, unless it holds nothing we have not read (files.identify).
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
        src = self._open(path, now, follow=False) if self.slots.free(self.held()) else None
        if src is None:
            return bool(self.slots.free(self.held()))
        # With no position of its own, a rotated file is read from 0 only if written since this shipper's
        # history began (not before it was installed) and since its oldest kept entry, or if we owe it a read.
        src.adopt_after = 0.0 if self.owed(src) else self.positions.stale_before
        self._retire(src, now)
        return True

    def drop(self, src: TailedFile) -> None:
        """A file with nothing to read: a copy of content read elsewhere, or older than our history."""
        if self.active.get(src.path) is src:
            del self.active[src.path]
        elif src in self.retired:
            self.retired.remove(src)
        self._ignored.add((src.dev, src.ino))
        src.tail.close()

    def owner(self, sid: str, other: TailedFile) -> TailedFile | None:
        """The source, other than ``other``, that reads content ``sid`` (one found truncated is
        detached first, waiting for a copy)."""
        for src in self.sources():
            if src is not other and src.source_id == sid:
                if not src.detached and not self._intact(src):
                    self.truncated(src)
                return src
        return None

    def take_over(self, owner: TailedFile, copy: TailedFile) -> None:
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

    def truncated(self, src: TailedFile) -> None:
        """copytruncate: the file shrank or begins anew. ``src`` keeps the content read so far and
        waits, detached, for its copy (a sibling found by the rescan) to go on from where it stopped;
        if none comes within ``rotate_wait_ms`` it is finished like a rotated file. What the file
        holds now is a new source read from 0."""
        if src.builder is None or src.source_id is None:
            return
        try:
            fd = os.dup(src.tail.fd)
        except OSError as e:   # no descriptor free: the truncation is seen again at the next look
            self.slots.exhausted(self.held(), e)
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

    # finishing rotated files ------------------------------------------------------

    def finish(self, done: Callable[[TailedFile], bool], now: float, wait: float) -> None:
        """Retired files read to their end and gone at least ``wait`` seconds are finished by ``done``
        (False: lines came in the meantime, the file stays)."""
        self.retired = [src for src in self.retired
                        if not (src.at_eof and now - (src.gone_since or now) >= wait and done(src))]
