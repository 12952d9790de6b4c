"""A file the shipper follows (where it is, how far it was read, the state of its records), and who it is:
``identify`` decides which content a file holds and where reading it goes on."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from shipper import identity
from shipper.enrich import K8sMeta, display_path
from shipper.identity import Position
from shipper.positions import Positions
from shipper.records import RecordBuilder
from shipper.tail import FileTail


@dataclass
class TailedFile:
    path: str
    tail: FileTail
    dev: int
    ino: int
    directory: str                    # identity.scope: where the file really is (symlinks resolved), for a
                                      # sidecar with its pod's uid
    opened_at: float
    source_id: str | None = None      # None until the first line is complete
    fp: str | None = None             # fingerprint of the first line, once complete
    window: int = 0                   # identity.window at tail.offset
    builder: RecordBuilder | None = None
    key: bytes = b""
    at_eof: bool = False
    gone_since: float | None = None   # the path no longer leads to this file
    # A rotated file found by a sibling scan: with no known position, read it only if it
    # was written after this wall-clock time (else it is older than our history).
    adopt_after: float | None = None
    # Truncated under us (copytruncate): the file no longer holds this content, so nothing is read
    # through it; the content's copy, once found, takes its place and reading goes on, state and all.
    detached: bool = False
    read_at: float = 0.0              # when bytes were last read from it (the least recent is closed first)
    reopened: bool = False            # opened again after being closed while idle

    def __post_init__(self) -> None:
        self.read_at = self.read_at or self.opened_at

    def position(self) -> Position:
        return Position(self.tail.offset, self.window)

    @property
    def name(self) -> str:
        """The path as valid text, for records, checkpoints and logs (``path`` opens the file)."""
        return display_path(self.path)


def container_key(meta: K8sMeta, path: str) -> bytes:
    if meta.namespace and meta.pod and meta.container:
        return f"{meta.namespace}/{meta.pod}/{meta.container}".encode()
    return display_path(path).encode()


class Verdict(Enum):
    NOT_YET = "its first line is not complete yet"
    NOTHING = "it holds nothing to read"


@dataclass(frozen=True)
class TakeOver:
    """The file is the copy of a truncated file's content: reading goes on through ``owner``."""
    owner: TailedFile


@dataclass(frozen=True)
class Identified:
    source_id: str
    fingerprint: str
    position: Position


def identify(src: TailedFile, node: str, owner_of: Callable[[str], TailedFile | None], positions: Positions, *,
             rotated: bool, owed: bool) -> Identified | TakeOver | Verdict:
    """Who ``src`` is and where to read it from, once its first line is complete.

    ``owner_of(sid)`` is the other source reading content ``sid``, if any; ``rotated``: the file was
    renamed, deleted or found beside a path (not the file at a tailed path); ``owed``: it was rotated
    away before being read to its end, so it is read whatever its age."""
    fd = src.tail.fd
    fp = identity.fingerprint(fd, src.directory)
    if fp is None:
        return Verdict.NOT_YET
    sid = identity.source_id(node, fp)
    owner = owner_of(sid)
    pos: Position | None = None
    if owner is not None and owner.detached:
        if rotated and identity.holds(fd, owner.position()):
            return TakeOver(owner)
        sid = identity.distinct_id(node, fp, fd)
    elif owner is not None:
        # Two open files begin alike: a copy (or one being made) of what the owner is reading
        # holds the same bytes as far as it goes and is read through the owner.
        upto = min(src.tail.size(), owner.tail.offset)
        if identity.window(fd, upto) == identity.window(owner.tail.fd, upto):
            return Verdict.NOTHING
        sid = identity.distinct_id(node, fp, fd)
    else:
        pos = positions.known(sid)
        if pos is not None and not identity.holds(fd, pos):
            sid, pos = identity.distinct_id(node, fp, fd), None
    if pos is None:
        pos = positions.known(sid)
        pos = pos if pos is not None and identity.holds(fd, pos) else positions.legacy(node, fd)
    if pos is None and src.adopt_after is not None and os.fstat(fd).st_mtime < src.adopt_after:
        return Verdict.NOTHING
    if src.adopt_after is not None and pos is not None and pos.offset >= src.tail.size() and not owed:
        return Verdict.NOTHING
    return Identified(sid, fp, pos or Position(0, 0))
