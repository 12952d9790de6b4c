"""Read positions, saved durably and moved only after delivery.

The agent moves a source's position only once the batch holding the lines
before it, and every batch sent before that one, has been acknowledged by the
transport.

File format (JSON, version 2)::

    {"version": 2, "created_at": 1795514400,
     "sources": {"<source_id>": {"path": "...", "offset": 123, "window": 2882400018, "seen": 1795514400}}}

``window`` is the CRC-32 of the bytes before ``offset`` (shipper.identity): a
position is resumed only in a file that holds those bytes. ``seen`` is when the
source was last open (Unix seconds); entries of files not seen for
``STALE_AFTER_S`` (rotated away long ago) are dropped, so the file does not grow
with every rotation. ``created_at`` is when this shipper's history began: a
rotated file it has no position for is read from 0 only if it was written
since (so a file created and rotated away while the shipper was down is read,
and a fresh install leaves old rotated files alone).

A version-1 file (ids of device, inode and first-line CRC) is read as
``legacy`` offsets, each taken over by the file it names on the first look.

Saved by writing a temporary file, fsync, rename and fsync of the directory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from schemas.durable import write_durably
from schemas.errors import ConfigError
from shipper.identity import Position

VERSION = 2
STALE_AFTER_S = 24 * 3600


@dataclass
class _Source:
    path: str
    pos: Position
    seen: float


class Checkpoints:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._sources: dict[str, _Source] = {}
        self.legacy: dict[str, tuple[str, int]] = {}   # version-1 id -> (path, offset), for this run
        self.created_at = time.time()
        self._dirty = False
        self._load()

    def _load(self) -> None:
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            self._dirty = True  # a new history: its start is saved at the first save
            return
        except orjson.JSONDecodeError as e:
            raise ConfigError(f"checkpoint file {self.path} is corrupt ({e}); move it away to re-read "
                              "every file from the start (duplicates are dropped by record id)") from None
        version = data.get("version")
        if version == 1:
            self.legacy = {sid: (s["path"], int(s["offset"])) for sid, s in data["sources"].items()}
            self.created_at = 0.0  # its history began before it said so
            self._dirty = True
            return
        if version != VERSION:
            raise ConfigError(f"checkpoint file {self.path} has version {version}, expected {VERSION}")
        self.created_at = float(data.get("created_at", 0))
        for sid, s in data["sources"].items():
            self._sources[sid] = _Source(s["path"], Position(int(s["offset"]), int(s["window"])),
                                         float(s.get("seen", time.time())))

    def position(self, source_id: str) -> Position | None:
        s = self._sources.get(source_id)
        return s.pos if s else None

    def offset(self, source_id: str) -> int | None:
        s = self._sources.get(source_id)
        return s.pos.offset if s else None

    def sources(self) -> dict[str, tuple[str, int]]:
        return {sid: (s.path, s.pos.offset) for sid, s in self._sources.items()}

    def paths(self) -> set[str]:
        return {s.path for s in self._sources.values()} | {p for p, _ in self.legacy.values()}

    def advance(self, source_id: str, path: str, pos: Position) -> None:
        s = self._sources.get(source_id)
        if s is None:
            self._sources[source_id] = _Source(path, pos, time.time())
        elif pos != s.pos or path != s.path:
            s.path, s.pos = path, pos
        else:
            return
        self._dirty = True

    def forget(self, source_id: str) -> None:
        if self._sources.pop(source_id, None) is not None:
            self._dirty = True

    def prune(self, open_ids: set[str], now: float | None = None) -> None:
        """Mark open sources as seen; drop entries not seen for STALE_AFTER_S."""
        now = time.time() if now is None else now
        for sid in open_ids & self._sources.keys():
            self._sources[sid].seen = now
        stale = [sid for sid, s in self._sources.items() if now - s.seen > STALE_AFTER_S]
        for sid in stale:
            del self._sources[sid]
        self._dirty |= bool(stale)

    def save(self, force: bool = False) -> bool:
        """Write the file if anything changed; OSError (a full disk) leaves it to the next try."""
        if not (self._dirty or force):
            return False
        data = {"version": VERSION, "created_at": int(self.created_at),
                "sources": {sid: {"path": s.path, "offset": s.pos.offset, "window": s.pos.window,
                                  "seen": int(s.seen)} for sid, s in self._sources.items()}}
        write_durably(self.path, orjson.dumps(data, option=orjson.OPT_INDENT_2))
        self._dirty = False
        return True
