"""Batches that cannot be stored are kept, with the reason, never dropped.

``<data_dir>/quarantine/<topic>/<partition>/<offset>.<reason>.batch`` holds the
raw bytes and a ``.json`` beside it says why; both are written durably before
the consumer moves past the batch.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from schemas.durable import write_durably
from schemas.transport import safe_name


class Quarantine:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    def put(self, topic: str, partition: str, offset: int, value: bytes, reason: str, message: str) -> Path:
        base = self.root / safe_name(topic) / safe_name(partition) / f"{offset:020d}.{reason}"
        batch, note = base.with_name(base.name + ".batch"), base.with_name(base.name + ".json")
        write_durably(batch, value)
        write_durably(note, orjson.dumps(
            {"topic": topic, "partition": partition, "offset": offset, "reason": reason,
             "message": message, "bytes": len(value), "quarantined_at": time.time_ns()}))
        self.count += 1
        return batch
