"""What counts as "the same content": a source is a stream of bytes, not a file.

A source's id is a fingerprint of its first line (at most FINGERPRINT_BYTES)
and of the directory it lives in (symlinks resolved), not of its inode. So the
file a rename rotation leaves behind (``0.log`` → ``0.log.20261201-120000``)
and the copy a copytruncate makes (``app.log`` → ``app.log.1``) are the same
source as the file they came from, and reading goes on at the same offset
whichever of them holds the bytes. This is Vector's ``checksum`` fingerprint,
narrowed to one directory, with one guard Vector lacks:

A position is resumed in a file only when the WINDOW_BYTES just before it are
the bytes read there (``window``, a CRC-32 kept with every position). That
tells a copy (same bytes) from a different file that happens to begin with the
same line (a plain-text header, an inode reused with the same first line, the
ordering that fooled Filebeat's inode registry). Such a file gets a distinct
id, ``<fingerprint>:<dev>:<ino>``, and is read from its start: when in doubt,
a line is read twice (and ``verify`` names the duplicate), never skipped.

CRI and Docker lines begin with a nanosecond timestamp, so two kubelet files
practically never share a first line. A file whose first line is not complete
yet has no identity and is not read until it has one.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass

FINGERPRINT_BYTES = 1024
WINDOW_BYTES = 512


@dataclass(frozen=True, slots=True)
class Position:
    """How far a source was read: ``offset``, and the CRC-32 of the bytes before it."""
    offset: int
    window: int


def fingerprint(fd: int, directory: str) -> str | None:
    """Fingerprint of an open file's first line, or None while that line is incomplete."""
    head = os.pread(fd, FINGERPRINT_BYTES, 0)
    nl = head.find(b"\n")
    if nl >= 0:
        head = head[:nl + 1]
    elif len(head) < FINGERPRINT_BYTES:
        return None
    return hashlib.blake2b(os.fsencode(directory) + b"\0" + head, digest_size=8).hexdigest()


def scope(directory: str, pod_uid: str | None) -> str:
    """What a file's identity takes from where it is: its directory, and for a sidecar the pod's uid too.
    A sidecar's logs sit under the same path in every pod of its workload (an emptyDir) and often begin
    alike (a banner); without the uid two pods on one node would be one source, and the lake would drop
    the second pod's lines as duplicates of the first's."""
    return f"{pod_uid}/{directory}" if pod_uid else directory


def source_id(node: str, fp: str) -> str:
    return f"{node}:{fp}"


def distinct_id(node: str, fp: str, fd: int) -> str:
    """The id of a file that begins like another source but holds other bytes."""
    st = os.fstat(fd)
    return f"{node}:{fp}:{st.st_dev:x}:{st.st_ino:x}"


def window(fd: int, offset: int) -> int:
    """CRC-32 of the WINDOW_BYTES (fewer at the start) before ``offset``; -1 if the file is shorter."""
    n = min(WINDOW_BYTES, offset)
    data = os.pread(fd, n, offset - n) if n else b""
    return zlib.crc32(data) if len(data) == n else -1


def window_of(data: bytes) -> int:
    """The window of the bytes just read, when ``data`` ends where the position is and is long enough."""
    return zlib.crc32(data[-WINDOW_BYTES:])


def legacy_id(node: str, fd: int) -> str | None:
    """The id a version-1 checkpoint gave this file (device, inode, CRC-32 of the first line)."""
    head = os.pread(fd, FINGERPRINT_BYTES, 0)
    nl = head.find(b"\n")
    if nl < 0 and len(head) < FINGERPRINT_BYTES:
        return None
    st = os.fstat(fd)
    return f"{node}:{st.st_dev:x}:{st.st_ino:x}:{zlib.crc32(head[:nl + 1] if nl >= 0 else head):08x}"


def holds(fd: int, pos: Position) -> bool:
    """Does this file carry the bytes read up to ``pos``?"""
    return pos.offset == 0 or window(fd, pos.offset) == pos.window
