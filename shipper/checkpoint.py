"""Read positions, saved durably and moved only after delivery.

The agent moves a source's position only once the batch holding the lines
before it, and every batch sent before that one, has been acknowledged by the
transport.

File format (JSON, version 1)::

    {"version": 1, "sources": {"<source_id>": {"path": "...", "offset": 123, "seen": 1795514400}}}

``seen`` is when the source was last open (Unix seconds); entries of files not
seen for ``STALE_AFTER_S`` (rotated away long ago) are dropped, so the file does
not grow with every rotation.

Saved by writing a temporary file, fsync, rename and fsync of the directory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from schemas.durable import write_durably
from schemas.errors import ConfigError

VERSION = 1
STALE_AFTER_S = 24 * 3600


@dataclass
class _Source:
    path: str
    offset: int
    seen: float


class Checkpoints:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._sources: dict[str, _Source] = {}
        self._dirty = False
        self._load()

    def _load(self) -> None:
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return
        except orjson.JSONDecodeError as e:
            raise ConfigError(f"checkpoint file {self.path} is corrupt ({e}); move it away to re-read "
                              "every file from the start (duplicates are dropped by record id)") from None
        if data.get("version") != VERSION:
            raise ConfigError(f"checkpoint file {self.path} has version {data.get('version')}, expected {VERSION}")
        for sid, s in data["sources"].items():
            self._sources[sid] = _Source(s["path"], int(s["offset"]), float(s.get("seen", time.time())))

    def offset(self, source_id: str) -> int | None:
        s = self._sources.get(source_id)
        return s.offset if s else None

    def sources(self) -> dict[str, tuple[str, int]]:
        return {sid: (s.path, s.offset) for sid, s in self._sources.items()}

    def advance(self, source_id: str, path: str, offset: int) -> None:
        s = self._sources.get(source_id)
        if s is None:
            self._sources[source_id] = _Source(path, offset, time.time())
        elif offset != s.offset or path != s.path:
            s.path, s.offset = path, offset
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
        if not (self._dirty or force):
            return False
        data = {"version": VERSION, "sources": {sid: {"path": s.path, "offset": s.offset, "seen": int(s.seen)}
                                                for sid, s in self._sources.items()}}
        write_durably(self.path, orjson.dumps(data, option=orjson.OPT_INDENT_2))
        self._dirty = False
        return True

