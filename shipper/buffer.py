"""Batches waiting on disk while the transport is down, replayed in order.

One file per batch in ``<data_dir>/buffer``: ``<seq>.buf`` holding a 4-byte
header length, a JSON header (key and the checkpoint marks the batch carries)
and the wire-format batch. ``seq`` is the batch's place in delivery's queue,
not the order of writing: batches reach the buffer as their failures come in,
and a restart must replay a container's batches in the order they were read
(the lake drops a record behind one it already has from the same source). Written durably before the batch counts as
buffered, removed once the transport acknowledges it. The marks survive a
restart, so the agent resumes reading after buffered lines instead of reading
them twice, while its checkpoint still only moves on acknowledgement.

A segment whose header cannot be read (damaged on disk) is renamed aside
(``.<name>.damaged``) with a warning and ``damaged`` is set: the agent then
reads again from the checkpoint instead of resuming after the buffered marks,
so the damaged batch's lines are read and sent again (the lake drops what it
already has) rather than skipped.

A batch the transport refuses for good (too large for the topic) is set aside
in ``<data_dir>/refused/<node>/<seq>.batch``: a spool (schemas.spool), so an
aggregator pointed at it (``[spool] dir``) stores its records once the cause is
fixed, and until then ``verify`` reports their byte ranges as never stored.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import orjson

from runtime.durable import safe_name, write_durably
from schemas.spool import list_segments, segment_name
from shipper.identity import Position

log = logging.getLogger("loglake.shipper")
_NAME = re.compile(r"^(\d{20})\.buf$")
Marks = dict[str, tuple[str, Position]]  # source_id -> (path, position after the batch)


@dataclass(frozen=True)
class Buffered:
    seq: int
    path: Path
    size: int
    key: bytes
    marks: Marks
    records: int


class DiskBuffer:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.bytes = 0
        self.damaged = False   # a segment was moved aside at load: positions after it cannot be trusted

    def load(self) -> list[Buffered]:
        """Segments left by an earlier run, oldest first."""
        self.dir.mkdir(parents=True, exist_ok=True)
        out = []
        for name in sorted(os.listdir(self.dir)):
            m = _NAME.match(name)
            if not m:
                continue
            path = self.dir / name
            data = path.read_bytes()
            try:
                header = self._header(data)
                entry = Buffered(int(m.group(1)), path, len(data), header["key"].encode(),
                                 {str(k): (str(v[0]), Position(int(v[1]), int(v[2]) if len(v) > 2 else -1))
                                  for k, v in header["marks"].items()}, int(header["records"]))
            except (struct.error, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
                self._set_aside(path, e)
                continue
            out.append(entry)
        self.bytes = sum(b.size for b in out)
        return out

    def _set_aside(self, path: Path, why: Exception) -> None:
        aside = path.with_name(f".{path.name}.damaged")
        os.replace(path, aside)
        self.damaged = True
        log.warning("disk buffer segment damaged; moved aside, its lines are read again from the checkpoint",
                    extra={"segment": str(path), "moved_to": str(aside), "problem": str(why) or type(why).__name__})

    @staticmethod
    def _header(data: bytes) -> dict:
        (n,) = struct.unpack_from(">I", data)
        return orjson.loads(data[4:4 + n])

    @property
    def full(self) -> bool:
        return self.bytes >= self.max_bytes

    def put(self, seq: int, key: bytes, value: bytes, marks: Marks, records: int) -> Buffered:
        """Write the batch at place ``seq`` of the queue durably; OSError (a full disk) leaves nothing behind."""
        header = orjson.dumps({"key": key.decode(errors="replace"), "records": records,
                               "marks": {k: [p, pos.offset, pos.window] for k, (p, pos) in marks.items()}})
        data = struct.pack(">I", len(header)) + header + value
        path = self.dir / f"{seq:020d}.buf"
        write_durably(path, data)
        self.bytes += len(data)
        return Buffered(seq, path, len(data), key, marks, records)

    def value(self, entry: Buffered) -> bytes:
        data = entry.path.read_bytes()
        (n,) = struct.unpack_from(">I", data)
        return data[4 + n:]

    def remove(self, entry: Buffered) -> None:
        entry.path.unlink(missing_ok=True)
        self.bytes -= entry.size


class SetAside:
    """Batches the transport refuses for good, kept as a spool of this node (see the module's docstring)."""

    def __init__(self, directory: Path, node: str) -> None:
        self.dir = directory / safe_name(node)

    def put(self, value: bytes) -> Path:
        segments = list_segments(self.dir)
        path = self.dir / segment_name(segments[-1][0] + 1 if segments else 0)
        write_durably(path, value)
        return path

