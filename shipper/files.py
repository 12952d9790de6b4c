"""A file the shipper follows: where it is, how far it was read, and the state of its records."""

from __future__ import annotations

from dataclasses import dataclass

from shipper.enrich import K8sMeta, display_path
from shipper.identity import Position
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
