"""What counts as "the same file": device + inode + a checksum of the first line.

Device and inode alone are not enough: after rotation a new file can get the
inode of one just deleted. The checksum of the first line (at most
FINGERPRINT_BYTES) tells such files apart; CRI and Docker lines begin with a
nanosecond timestamp, so two files' first lines practically never collide. A
file whose first line is not complete yet has no identity and is not read
until it has one, so the identity never changes while the file grows.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

FINGERPRINT_BYTES = 1024


@dataclass(frozen=True, slots=True)
class FileId:
    dev: int
    ino: int
    checksum: int

    def source_id(self, node: str) -> str:
        return f"{node}:{self.dev:x}:{self.ino:x}:{self.checksum:08x}"


def identify(fd: int) -> FileId | None:
    """Identity of an open file, or None while its first line is incomplete."""
    st = os.fstat(fd)
    head = os.pread(fd, FINGERPRINT_BYTES, 0)
    nl = head.find(b"\n")
    if nl >= 0:
        head = head[:nl + 1]
    elif len(head) < FINGERPRINT_BYTES:
        return None
    return FileId(st.st_dev, st.st_ino, zlib.crc32(head))
