"""Spool transport: batches as segment files in ``<spool dir>/<node>/``.

A segment is acknowledged once it is durable (fsync + rename + directory fsync);
a write that fails (a full disk) is a TransportError like a broker outage, so
the batch waits in the shipper and is written again later under the same number.

Sequence numbers never go backwards, whatever happens to the spool: they go on
after the highest of (the newest segment present, the lease in the shipper's
own ``<data_dir>/spool-seq``). The lease is a number not used yet, moved
``LEASE`` ahead durably before it is reached, so a wiped or restored spool
directory cannot make numbers repeat. A shipper that has lost its own state as
well starts at the current time in microseconds, above anything an earlier
life of it could have reached (it would need a million batches a second).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from schemas.durable import write_durably
from schemas.errors import TransportError
from schemas.transport import SpoolSettings, list_segments, safe_name, segment_name

LEASE = 4096


class SpoolTransport:
    name = "spool"

    def __init__(self, settings: SpoolSettings, node: str, data_dir: Path) -> None:
        self.dir = settings.dir / safe_name(node)
        self.lease_path = data_dir / "spool-seq"
        self._next = 0
        self._lease = 0
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TransportError(f"cannot create the spool directory {self.dir}: {e.strerror}; "
                                 "check [spool] dir and its permissions") from None
        segments = list_segments(self.dir)
        try:
            leased = int(self.lease_path.read_text())
        except FileNotFoundError:
            leased = time.time_ns() // 1000
        except ValueError:
            raise TransportError(f"{self.lease_path} does not hold a number; remove it (sequence numbers "
                                 "then start at the current time)") from None
        self._next = max(segments[-1][0] + 1 if segments else 0, leased)
        self._lease = self._next

    def _write(self, seq: int, value: bytes) -> None:
        if seq >= self._lease:
            write_durably(self.lease_path, str(seq + LEASE).encode())
            self._lease = seq + LEASE
        write_durably(self.dir / segment_name(seq), value, 0o640)

    async def send(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        # Segments must land in sequence order: one write at a time.
        async with self._lock:
            try:
                await asyncio.to_thread(self._write, self._next, value)
            except OSError as e:
                raise TransportError(f"cannot write spool segment in {self.dir}: {e.strerror}") from None
            self._next += 1
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def reset(self) -> None:
        return None

    async def close(self) -> None:
        return None
