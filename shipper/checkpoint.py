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

A damaged file never stops the shipper, and loses nothing: an entry that is
not a valid position (an offset that is no whole number, a missing window, a
wrong type) is skipped with a warning naming it, and its source is read again
from its start, while the others keep their positions; a file that cannot be
parsed at all is moved aside (``checkpoints.json.corrupt-<time>``) with a
warning, and every file is read again from its start, rotated ones written in
the last ``STALE_AFTER_S`` included. Reading again, not skipping to the end
(Fluent Bit's default for a file it has no position for), because the lake
drops records it already has by id, while a skipped line is gone. A file of a
newer version than this shipper knows is refused: it is not damaged, a newer
shipper wrote it.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

import orjson

from runtime.durable import make_private_dirs, require_private_dir, write_durably
from runtime.errors import ConfigError
from shipper.identity import Position

log = logging.getLogger("loglake.shipper")
VERSION = 2
STALE_AFTER_S = 24 * 3600
_WARN_EACH = 20   # skipped entries warned about one by one; the rest in one line
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def prepare_state_dir(path: Path) -> None:
    """Create the shipper's data directory if needed and make sure it can be written now, so a read-only
    one is one sentence at start rather than a checkpoint that is never saved. A full disk passes:
    the shipper waits it out (reading pauses, saves are retried)."""
    probe = path / f".write-test-{os.getpid()}"
    try:
        make_private_dirs(path)
        try:
            os.close(os.open(probe, _CREATE, 0o600))
        except FileExistsError:   # left by an earlier process with this pid
            pass
        os.unlink(probe)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return
        raise ConfigError(f"the shipper data directory {path} cannot be written ({e.strerror}); make it writable, "
                          "or point [shipper] data_dir (LOGLAKE_SHIPPER_DATA_DIR) at a writable directory") from None
    require_private_dir(path, "shipper data directory", create=False)


def _whole(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _time(v: object) -> float | None:
    """A Unix time as saved, or None (JSON's true is no time)."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 else None


def _entry(s: object, now: float) -> tuple[str, Position, float] | str:
    """A version-2 entry as (path, position, seen), or what is wrong with it."""
    if not isinstance(s, dict):
        return f"the entry is {type(s).__name__}, not an object"
    path, offset, window, seen = s.get("path"), s.get("offset"), s.get("window"), s.get("seen")
    if not isinstance(path, str):
        return f"path {path!r} is not text"
    if not _whole(offset) or offset < 0:
        return f"offset {offset!r} is not a whole number of bytes"
    if not _whole(window) or not -1 <= window < 1 << 32:
        return f"window {window!r} is not a CRC-32"
    # a bad "seen" costs nothing but the entry's age: it counts from now
    return path, Position(offset, window), _time(seen) or now


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
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self._dirty = True  # a new history: its start is saved at the first save
            return
        except OSError as e:
            raise ConfigError(f"cannot read the checkpoint file {self.path} ({e.strerror}); fix its permissions, or "
                              "move it away to read every file again from the start") from None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            return self._set_aside(f"not JSON: {e}")
        if not isinstance(data, dict) or not isinstance(data.get("sources"), dict):
            return self._set_aside("not an object with sources")
        version = data.get("version")
        if _whole(version) and version > VERSION:
            raise ConfigError(f"checkpoint file {self.path} has version {version}, expected {VERSION}: a newer "
                              "loglake-shipper wrote it; run that version, or move the file away to read every file "
                              "again from the start")
        if version not in (1, VERSION):
            return self._set_aside(f"version {version!r}")
        now, skipped = time.time(), []
        if version == 1:
            for sid, s in data["sources"].items():
                if isinstance(s, dict) and isinstance(s.get("path"), str) and _whole(s.get("offset")):
                    self.legacy[sid] = (s["path"], s["offset"])
                else:
                    skipped.append((sid, s, "not a path and a whole offset"))
            self.created_at = 0.0  # its history began before it said so
            self._dirty = True
        else:
            # unknown: rotated files of the last STALE_AFTER_S are read rather than left alone
            self.created_at = _time(data.get("created_at")) or 0.0
            for sid, s in data["sources"].items():
                entry = _entry(s, now)
                if isinstance(entry, str):
                    skipped.append((sid, s, entry))
                else:
                    self._sources[sid] = _Source(*entry)
        for i, (sid, s, why) in enumerate(skipped):
            if i < _WARN_EACH:
                log.warning("checkpoint entry skipped: its file is read again from the start (the lake drops "
                            "records it already has)", extra={"file": str(self.path), "source_id": sid, "problem": why,
                                                              "path": s.get("path") if isinstance(s, dict) else None})
        if len(skipped) > _WARN_EACH:
            log.warning("more checkpoint entries skipped", extra={"file": str(self.path),
                                                                  "count": len(skipped) - _WARN_EACH})
        self._dirty |= bool(skipped)

    def _set_aside(self, why: str) -> None:
        """The whole file is unreadable: keep it for a person to look at, start a history whose beginning is
        unknown (created_at 0), so every file, and every rotated file of the last day, is read from 0."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        try:
            os.rename(self.path, aside)
        except OSError as e:
            raise ConfigError(f"checkpoint file {self.path} is damaged ({why}) and cannot be moved aside "
                              f"({e.strerror}); move it away by hand to read every file again from the start") from None
        log.warning("checkpoint file damaged; moved aside, every file is read again from the start (the lake drops "
                    "records it already has)", extra={"file": str(self.path), "moved_to": str(aside), "problem": why})
        self.created_at = 0.0
        self._dirty = True

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
