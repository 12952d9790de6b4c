"""How many log files the shipper holds open at once, and what waits for a descriptor.

A node with a thousand containers has a thousand log files, and a process may
hold only RLIMIT_NOFILE descriptors (1024 by default under systemd and most
container runtimes), which the spool, the disk buffer, the checkpoint, Kafka's
sockets and the metrics server need too. So the shipper holds at most
``limit`` log files open:

- a file read to its end and idle for ``close_idle_after_ms`` is closed
  (Filebeat's ``close_inactive``, also 5 minutes by default); when files wait
  for a descriptor, the least recently read files at their end are closed
  first, whatever their idle time (the eviction Vector's ``max_open_files``
  does). A closed file is remembered by path, device, inode, size and
  modification time, and opened again by path when one of them changes; its
  read position is the one kept for its content (shipper.identity), so the
  bytes before it are checked again and a rotation while it was closed is a
  rotation like any other: the renamed file is found by the rotated-sibling
  scan and read on from that position;
- a file that was renamed or deleted while open is never closed before it is
  read to its end: it could not be opened again;
- a file that finds no free descriptor waits (warned once, counted as
  ``errors_total{kind="open_files_limit"}``) and is opened, oldest first, as
  soon as one frees. Nothing is lost: its bytes stay on disk.

An open that fails with EMFILE or ENFILE anyway (descriptors taken elsewhere
in the process, or the system table full) lowers the limit to what is held
then; the file waits like any other.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
from collections import Counter
from dataclasses import dataclass

log = logging.getLogger("loglake.shipper")

# Descriptors kept free for everything but log files: stdio (3), the event loop (3), Kafka (a
# TLS connection per broker and the bootstrap), the metrics server and its scrapes, a durable
# write's temporary file and directory fsync (spool segment, disk buffer, checkpoint, lease:
# 2 each), the directory walks of discovery, imports. A spool shipper was seen holding 6 to 9
# besides its log files (tests/test_open_files.py); 64 leaves room for Kafka's connections and
# bursts of durable writes. A small limit keeps a quarter of itself instead.
HEADROOM = 64
EXHAUSTED = (errno.EMFILE, errno.ENFILE)


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one, as Go's runtime does for every program and
    systemd advises for those that need many files; the soft limit now in force is returned."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def budget(configured: int, soft: int) -> int:
    """Log files to hold open at most: ``configured`` (0: no own limit) within the process limit
    less its headroom."""
    if soft == resource.RLIM_INFINITY or soft < 0:
        return configured or 1 << 20
    room = max(1, soft - min(HEADROOM, soft // 4))
    return min(configured, room) if configured else room


@dataclass(frozen=True, slots=True)
class Closed:
    """A file closed while idle, as it was then: it is opened again when any of this changes."""
    dev: int
    ino: int
    size: int
    mtime_ns: int
    source_id: str | None   # its content's id (None: its first line was not complete yet)

    @classmethod
    def of(cls, fd: int, offset: int, max_line: int, source_id: str | None) -> Closed | None:
        """The file read up to ``offset`` as it is now; None if complete lines came since the last read
        (only a line still waiting for its newline may lie past the position, else it would not be read
        until the file changed again)."""
        st = os.fstat(fd)
        rest = st.st_size - offset
        if rest > 0 and (rest > max_line or b"\n" in os.pread(fd, rest, offset)):
            return None
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, source_id)

    def same_file(self, st: os.stat_result) -> bool:
        return (st.st_dev, st.st_ino) == (self.dev, self.ino)

    def changed(self, st: os.stat_result) -> bool:
        return (st.st_size, st.st_mtime_ns) != (self.size, self.mtime_ns)


class Slots:
    """The descriptor budget for log files and the paths waiting for one, oldest first."""

    def __init__(self, limit: int, errors: Counter[str]) -> None:
        self.limit = limit
        self._errors = errors
        # path -> when it first found no descriptor, and the (device, inode) it then named
        self.waiting: dict[str, tuple[float, tuple[int, int]]] = {}
        self._warned = False

    def free(self, held: int) -> int:
        return max(0, self.limit - held)

    def wait(self, path: str, now: float, ident: tuple[int, int]) -> None:
        """``path`` (file ``ident``) found no descriptor: it is opened when one frees."""
        if path in self.waiting:
            return
        self.waiting[path] = (now, ident)
        self._errors["open_files_limit"] += 1
        if not self._warned:
            self._warned = True
            log.warning("open files limit reached; further log files wait for a descriptor and are read as soon "
                        "as one frees (idle files are closed first, nothing is lost)", extra={"limit": self.limit})

    def served(self, path: str) -> None:
        """``path`` is open, gone, or no longer wanted."""
        if self.waiting.pop(path, None) is not None and not self.waiting and self._warned:
            self._warned = False
            log.info("every waiting log file is open again", extra={"limit": self.limit})

    def order(self, wanted: list[tuple[str, tuple[int, int]]]) -> list[tuple[str, tuple[int, int]]]:
        """``wanted`` (path, file) with the paths waiting longest first, the rest in the order given."""
        rank = {p: i for i, p in enumerate(self.waiting)}
        return sorted(wanted, key=lambda w: rank.get(w[0], len(rank)))

    def exhausted(self, held: int, error: OSError) -> None:
        """An open failed with EMFILE/ENFILE: hold no more than now, so the rest of the process keeps its share."""
        new = max(1, held)
        if new < self.limit:
            log.warning("too many open files; holding fewer log files from now on", extra={
                "limit": new, "was": self.limit, "error": error.strerror})
            self.limit = new
