"""Batches that cannot be stored are kept, with the reason, never dropped.

``<data_dir>/quarantine/<topic>/<partition>/<offset>.<reason>.batch`` holds the
raw bytes and a ``.json`` beside it says why; both are written durably before
the consumer moves past the batch (runtime.durable.write_durably: never through
a link planted at either name).

A transport that finds something at an offset that it must not read as a batch
(the spool: a link, a FIFO, a device, a file over the size limit) hands it over
as ``Unreadable``: the bytes it could read safely (often none) and why. It is
quarantined like a batch that does not decode, and its offset counts as consumed.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from runtime.durable import safe_name, write_durably


class Unreadable(bytes):
    """A message's value that is not a batch: ``reason`` (e.g. not_a_file, too_large) and ``note``,
    one sentence saying what was found and where it is now."""

    reason: str
    note: str

    def __new__(cls, data: bytes, reason: str, note: str) -> Unreadable:
        self = super().__new__(cls, data)
        self.reason, self.note = reason, note
        return self


class Quarantine:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    def put(self, topic: str, partition: str, offset: int, value: bytes, reason: str, message: str) -> Path:
        base = self.root / safe_name(topic) / safe_name(partition) / f"{offset:020d}.{safe_name(reason)}"
        batch, note = base.with_name(base.name + ".batch"), base.with_name(base.name + ".json")
        write_durably(batch, bytes(value))
        write_durably(note, orjson.dumps(
            {"topic": topic, "partition": partition, "offset": offset, "reason": reason,
             "message": message, "bytes": len(value), "quarantined_at": time.time_ns()}))
        self.count += 1
        return batch
