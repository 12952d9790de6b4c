"""Consuming the spool: each node directory is a partition, each segment an offset.

Consumed segments are deleted once their position is committed in the catalog,
except the newest segment of each node, which keeps the shipper's sequence
numbers going up across restarts (the shipper also keeps a lease of its own).

A segment below the committed position, other than the one kept, has come
back: a spool restored from an older backup, a shipper whose numbers went back,
or (after a crash between the catalog commit and the delete) one not removed
yet. It is never silently skipped: the node's position goes back to it
(``rewinds``, logged and counted), its records are read again, and the ones
already stored are dropped as duplicates by record id.

Only what can be a batch is read: a regular file (checked with ``lstat`` and
again on the descriptor, opened without following a link and without waiting
on a FIFO) of at most schemas.spool.MAX_SEGMENT_BYTES. Anything else at a
segment's name (a link, a FIFO, a device, a directory, a larger file) is moved
aside in its node directory (``.<name>.<reason>``, never read again) and handed
over as ``Unreadable`` (aggregator.quarantine): it is quarantined, its offset
counts as consumed, and the node's later segments are read as usual. The spool
directory must be private to the aggregator's user (runtime.durable).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from aggregator.quarantine import Unreadable
from aggregator.source.base import Message
from runtime.durable import require_private_dir
from runtime.errors import TransportError
from runtime.transport import SpoolSettings
from schemas.spool import MAX_SEGMENT_BYTES, list_segments, segment_name

log = logging.getLogger("loglake.aggregator")
TOPIC = "spool"
# Bytes read in one poll (always at least one segment): bounds memory whatever the segments hold.
MAX_POLL_BYTES = 64 * 1024 * 1024
_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# Quarantine reasons of entries that are not batches (metrics start every reason at 0).
NOT_A_FILE, TOO_LARGE = "not_a_file", "too_large"
UNREADABLE_REASONS = (NOT_A_FILE, TOO_LARGE)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _above(segments: list[tuple[int, Path]], committed: int) -> int:
    """Segments not committed yet: sequence numbers jump (a shipper may start at the time in
    microseconds), so they are counted, not subtracted."""
    return sum(1 for seq, _ in segments if seq >= committed)


class _Gone(Exception):
    """The segment was removed or replaced under us: what follows is read at the next poll."""


class SpoolSource:
    topic = TOPIC

    def __init__(self, settings: SpoolSettings, max_segments: int = 64, max_segment_bytes: int = MAX_SEGMENT_BYTES,
                 max_poll_bytes: int = MAX_POLL_BYTES) -> None:
        self.dir = settings.dir
        self.max_segments = max_segments
        self.max_segment_bytes = max_segment_bytes
        self.max_poll_bytes = max_poll_bytes
        self._next: dict[str, int] = {}
        self._committed: dict[str, int] = {}
        self._kept: dict[str, tuple[int, int]] = {}   # node -> (seq, inode) of the consumed segment left in place
        self._stuck: set[tuple[str, int, int]] = set()  # (node, seq, inode): unreadable, could not be moved aside
        self._skipped: set[str] = set()                 # node directory names that are not directories, warned once
        self._behind = True
        self.rewinds: Counter[str] = Counter()
        self._lag: dict[str, int] = {}                  # node -> segments at or above its committed position
        # one spool, one consumer: nothing is ever revoked
        self.on_revoke: Callable[[list[str]], Awaitable[None]] | None = None

    async def start(self, positions: Callable[[], dict[str, int]]) -> None:
        require_private_dir(self.dir, "spool directory")
        self._next = positions()
        self._committed = dict(self._next)
        for node, next_offset in self._next.items():
            kept = self.dir / node / segment_name(next_offset - 1)
            try:
                self._kept[node] = (next_offset - 1, os.lstat(kept).st_ino)
            except OSError:
                pass

    def _left(self, node: str, seq: int, path: Path) -> bool:
        """Is ``path`` the consumed segment kept in place, or an unreadable entry that could not be moved?"""
        try:
            ino = os.lstat(path).st_ino
        except OSError:
            return True
        return self._kept.get(node) == (seq, ino) or (node, seq, ino) in self._stuck

    def _is_stuck(self, node: str, seq: int, path: Path) -> bool:
        try:
            return (node, seq, os.lstat(path).st_ino) in self._stuck
        except OSError:
            return False

    def _rewound(self, node: str, segments: list[tuple[int, Path]]) -> int | None:
        committed = self._committed.get(node, 0)
        back = [seq for seq, path in segments if seq < committed and not self._left(node, seq, path)]
        return min(back) if back else None

    def _nodes(self) -> list[Path]:
        out: list[Path] = []
        if not os.path.isdir(self.dir):  # removed under us (a wiped spool): nothing to read until it is back
            return out
        with os.scandir(self.dir) as entries:
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    out.append(Path(e.path))
                elif e.name not in self._skipped:
                    # a link here would make the aggregator read, and delete, segments somewhere else
                    self._skipped.add(e.name)
                    log.warning("not a node directory; left alone", extra={"path": e.path})
        return sorted(out)

    def _pending(self) -> list[tuple[str, int, Path]]:
        out = []
        lag: dict[str, int] = {}
        for node_dir in self._nodes():
            node = node_dir.name
            segments = list_segments(node_dir)
            back = self._rewound(node, segments)
            if back is not None:
                log.warning("spool sequence went back: reading the segments again (a restored backup, a "
                            "renumbered shipper or a crash before consumed segments were removed); records "
                            "already stored are dropped as duplicates",
                            extra={"node": node, "from": self._committed.get(node, 0), "to": back})
                self.rewinds[node] += 1
                self._next[node] = self._committed[node] = back
                self._kept.pop(node, None)
            start = self._next.get(node, 0)
            out += [(node, seq, path) for seq, path in segments if seq >= start]
            lag[node] = _above(segments, self._committed.get(node, 0))
        self._lag = lag
        return out

    def _aside(self, node: str, seq: int, path: Path, reason: str, what: str) -> bytes:
        """Move an entry that is not a batch out of the way; the Unreadable value that tells why."""
        aside = path.with_name(f".{path.name}.{reason}")
        try:
            ino = os.lstat(path).st_ino
        except OSError:
            raise _Gone from None
        try:
            os.rename(path, aside)  # renames a link itself, never what it points to
        except FileNotFoundError:
            raise _Gone from None
        except OSError as e:
            self._stuck.add((node, seq, ino))
            where = f"left in place ({e.strerror} moving it aside) and never read"
        else:
            try:
                moved = os.lstat(aside)
            except OSError:
                moved = None
            if moved is not None and moved.st_ino != ino:
                # the shipper renamed a segment to this name in between: that is what was moved; put it back
                try:
                    os.rename(aside, path)
                except OSError as e:
                    raise TransportError(f"cannot move spool segment {aside} back to {path}: {e.strerror}; "
                                         "rename it by hand") from None
                raise _Gone
            where = f"moved to {aside}"
        note = f"spool segment {path} {what}, so it is not a batch; {where}"
        log.warning("spool entry is not a batch; quarantined", extra={"path": str(path), "reason": reason,
                                                                      "where": where})
        return Unreadable(b"", reason, note)

    def _read(self, node: str, seq: int, path: Path, budget: int) -> bytes | None:
        """The segment's bytes, an Unreadable, or None when it would exceed ``budget`` (read it next poll)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise _Gone from None
        if not stat.S_ISREG(st.st_mode):
            target = ""
            if stat.S_ISLNK(st.st_mode):
                try:
                    target = f" to {os.readlink(path)[:200]!r}"
                except OSError:
                    pass
            return self._aside(node, seq, path, NOT_A_FILE, f"is {_kind(st.st_mode)}{target}, not a regular file")
        try:
            fd = os.open(path, _OPEN)
        except FileNotFoundError:
            raise _Gone from None
        except OSError as e:
            if e.errno == errno.ELOOP:  # became a link since lstat
                return self._aside(node, seq, path, NOT_A_FILE, "is a symbolic link, not a regular file")
            raise TransportError(f"cannot read spool segment {path}: {e.strerror}; the aggregator must run as "
                                 "the user the spool directory belongs to") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return self._aside(node, seq, path, NOT_A_FILE, f"is {_kind(st.st_mode)}, not a regular file")
            if st.st_size > self.max_segment_bytes:
                return self._aside(node, seq, path, TOO_LARGE, f"holds {st.st_size} bytes, more than the "
                                                                f"{self.max_segment_bytes} a batch can take")
            if st.st_size > budget:
                return None
            chunks, n = [], 0
            while n <= self.max_segment_bytes:  # the size may have changed since fstat: bounded all the same
                chunk = os.read(fd, min(self.max_segment_bytes + 1 - n, 16 * 1024 * 1024))
                if not chunk:
                    break
                chunks.append(chunk)
                n += len(chunk)
            if n > self.max_segment_bytes:
                return self._aside(node, seq, path, TOO_LARGE, f"holds more than the {self.max_segment_bytes} "
                                                                "bytes a batch can take")
            return b"".join(chunks)
        except OSError as e:
            raise TransportError(f"cannot read spool segment {path}: {e.strerror}") from None
        finally:
            os.close(fd)

    def _read_pending(self, pending: list[tuple[str, int, Path]]) -> list[Message]:
        out: list[Message] = []
        budget = self.max_poll_bytes
        blocked: set[str] = set()  # a node whose next segment waits: its later ones wait too (offset order)
        for node, seq, path in pending:
            if node in blocked:
                continue
            try:
                value = self._read(node, seq, path, budget if out else self.max_segment_bytes)
            except _Gone:  # removed under us (a wiped spool): what follows is read next time
                blocked.add(node)
                continue
            if value is None:
                break
            budget -= len(value)
            out.append(Message(node, seq, value))
            self._next[node] = seq + 1
        return out

    async def poll(self, timeout: float) -> list[Message]:
        pending = (await asyncio.to_thread(self._pending))[:self.max_segments]
        self._behind = bool(pending)
        if not pending:
            await asyncio.sleep(timeout)
            return []
        return await asyncio.to_thread(self._read_pending, pending)

    def caught_up(self) -> bool:
        return not self._behind

    def lag(self) -> dict[str, int]:
        return dict(self._lag)

    def unavailable(self) -> str | None:
        if not os.path.isdir(self.dir):
            return f"spool directory {self.dir} is missing"
        if not os.access(self.dir, os.R_OK | os.X_OK):
            return f"spool directory {self.dir} is not readable"
        return None

    async def commit(self, partition: str, next_offset: int) -> None:
        segments = list_segments(self.dir / partition)
        for seq, path in segments[:-1]:
            if seq < next_offset and not self._is_stuck(partition, seq, path):
                try:
                    path.unlink(missing_ok=True)
                except OSError as e:  # something that is not a segment (a directory) and could not be moved
                    log.warning("cannot remove a consumed spool entry", extra={"path": str(path),
                                                                               "error": e.strerror})
        self._committed[partition] = next_offset
        self._lag[partition] = _above(segments, next_offset)
        if segments and segments[-1][0] < next_offset:
            try:
                self._kept[partition] = (segments[-1][0], os.lstat(segments[-1][1]).st_ino)
            except OSError:
                self._kept.pop(partition, None)

    async def close(self) -> None:
        return None

